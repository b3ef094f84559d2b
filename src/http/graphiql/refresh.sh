#!/usr/bin/env bash
# Refreshes the vendored GraphiQL (src/http/graphiql/vendor/) from the npm registry.
#
#   src/http/graphiql/refresh.sh [GRAPHIQL_VERSION] [REACT_VERSION]
#
# Takes the UMD production builds out of the published tarballs (npm checks each tarball against the registry's
# integrity hash), writes LICENSES.txt from the licence files of GraphiQL, React and every package bundled into
# graphiql.min.js (found through its source map), and prints the sizes, SHA-256 sums and tarball integrities to
# copy into README.md. Needs node and npm. GraphiQL 5 ships no UMD build (it is ESM with Monaco): stay on 4.x.
set -euo pipefail
graphiql="${1:-4.1.2}"
react="${2:-18.3.1}"
here="$(cd "$(dirname "$0")" && pwd)"
vendor="$here/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

npm pack --silent "graphiql@$graphiql" "react@$react" "react-dom@$react" >/dev/null
for tarball in *.tgz; do
  mkdir "${tarball%.tgz}" && tar xzf "$tarball" -C "${tarball%.tgz}"
done
cp "graphiql-$graphiql/package/graphiql.min.js" "graphiql-$graphiql/package/graphiql.min.css" "$vendor/"
cp "react-$react/package/umd/react.production.min.js" "$vendor/"
cp "react-dom-$react/package/umd/react-dom.production.min.js" "$vendor/"

# The packages bundled into graphiql.min.js, with their licence files (an ordinary install of the same release;
# the three named last are bundled but no longer installed with graphiql).
mkdir deps && (cd deps && npm init -y >/dev/null && npm install --silent --no-audit --no-fund --ignore-scripts \
  "graphiql@$graphiql" "react@$react" "react-dom@$react" graphql@16 graphql-ws @react-aria/utils @radix-ui/react-use-escape-keydown >/dev/null)
node - "graphiql-$graphiql/package/graphiql.min.js.map" deps/node_modules "$vendor/LICENSES.txt" "$graphiql" "$react" <<'EOF'
const fs = require('fs');
const path = require('path');
const [map, modules, out, graphiql, react] = process.argv.slice(2);
const names = new Set();
for (const source of JSON.parse(fs.readFileSync(map, 'utf8')).sources) {
  const at = source.lastIndexOf('node_modules/');
  if (at < 0) continue; // GraphiQL's own monorepo packages (MIT, GraphQL Contributors)
  const parts = source.slice(at + 'node_modules/'.length).split('/');
  names.add(parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]);
}
const find = (name) => (fs.existsSync(path.join(modules, name, 'package.json')) ? path.join(modules, name) : null);
const licenceFile = (dir) =>
  fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)(-mit)?(\.(md|txt))?$/i.test(f)) ?? null;
let text = `Licences of the GraphiQL served by Kontakt (src/http/graphiql/vendor/)

graphiql.min.js, graphiql.min.css: graphiql ${graphiql} (MIT), which bundles the packages listed below.
react.production.min.js: react ${react} (MIT). react-dom.production.min.js: react-dom ${react} (MIT).
Licence texts as published on npm (for bundled packages: the release npm installs with graphiql ${graphiql}).
`;
const missing = [];
const section = (title, dir) => {
  if (!dir) return missing.push(title);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const licence = typeof pkg.license === 'string' ? pkg.license : JSON.stringify(pkg.license ?? pkg.licenses);
  const file = licenceFile(dir);
  // A few MIT packages publish no licence file: their package.json licence and author stand for it.
  if (!file && licence !== 'MIT') return missing.push(title);
  text += `\n${'='.repeat(100)}\n${title} ${pkg.version} (${licence})\n${'='.repeat(100)}\n\n`;
  if (file) {
    text += fs.readFileSync(path.join(dir, file), 'utf8').trim() + '\n';
  } else {
    const author = typeof pkg.author === 'string' ? pkg.author : pkg.author?.name;
    text += `MIT licence (declared in package.json; the package ships no licence file)${author ? `, author: ${author}` : ''}.\n`;
  }
};
section('graphiql', find('graphiql'));
section('react', find('react'));
section('react-dom', find('react-dom'));
for (const name of [...names].sort()) if (!['react', 'react-dom'].includes(name)) section(name, find(name));
if (missing.length) {
  console.error(`no licence file found for: ${missing.join(', ')}`);
  process.exit(1);
}
fs.writeFileSync(out, text);
EOF

cd "$vendor"
echo "vendored (copy into README.md):"
for file in graphiql.min.js graphiql.min.css react.production.min.js react-dom.production.min.js; do
  printf '| `%s` | %s | `%s` |\n' "$file" "$(wc -c <"$file" | tr -d ' ')" "$(sha256sum "$file" | cut -d' ' -f1)"
done
for package in "graphiql@$graphiql" "react@$react" "react-dom@$react"; do
  printf '%s %s\n' "$package" "$(npm view "$package" dist.integrity)"
done
