// Starts the vendored GraphiQL (see README.md beside this file) against this server: queries and mutations are
// POSTed to /graphql, subscriptions go over WebSocket to /graphql/ws (graphql-transport-ws), where the headers
// pane's content is sent as the `connection_init` payload, so `{"Authorization": "Bearer …"}` works for both.
// An external script rather than an inline one, so the page's Content-Security-Policy can be `script-src 'self'`.
(function () {
  'use strict';
  var root = document.getElementById('graphiql');
  // Relative to the page (served at /graphql and /graphiql), so a proxy that mounts Kontakt under a path works.
  var endpoint = new URL(root.dataset.endpoint, document.baseURI);
  var subscriptions = new URL(root.dataset.subscriptions, document.baseURI);
  subscriptions.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:';

  document.documentElement.style.height = '100%';
  document.body.style.height = '100%';
  document.body.style.margin = '0';
  root.style.height = '100vh';

  var defaultQuery = [
    '# Kontakt GraphQL API',
    '#',
    '# Put a bearer token in the Headers pane below:',
    '#   { "Authorization": "Bearer <token>" }',
    '# (`kontakt serve` prints one in development; `kontakt token` makes one),',
    '# then re-fetch the schema (the circular arrow at the bottom left, or',
    '# Shift+Ctrl+R) for completion and the documentation explorer.',
    '#',
    '# Run the query with Ctrl+Enter or the run button.',
    '',
    '{',
    '  viewer {',
    '    tenant',
    '  }',
    '}',
    '',
  ].join('\n');

  var fetcher = GraphiQL.createFetcher({ url: endpoint.href, subscriptionUrl: subscriptions.href });
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultHeaders: '{\n  "Authorization": "Bearer "\n}',
      defaultEditorToolsVisibility: 'headers',
      // The token stays in this tab's memory, not in localStorage.
      shouldPersistHeaders: false,
    }),
  );
})();
