//! Looks at a request document before execution: which operation runs, and how many aliases it uses.
use async_graphql::parser::{
    Positioned,
    types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

/// What the edge needs to know about a parsed document.
#[derive(Debug, Clone)]
pub struct RequestDocument {
    /// The operation that will run; `None` when the name does not match (execution reports that).
    pub operation: Option<OperationKind>,
    pub aliases: usize,
    /// The document asks for `__schema` or `__type`.
    pub introspection: bool,
}

pub fn inspect(doc: &ExecutableDocument, operation_name: Option<&str>) -> RequestDocument {
    let selected = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    let operation = selected.map(|op| match op.node.ty {
        OperationType::Query => OperationKind::Query,
        OperationType::Mutation => OperationKind::Mutation,
        OperationType::Subscription => OperationKind::Subscription,
    });
    let mut tally = Tally::default();
    for (_, op) in doc.operations.iter() {
        tally.walk(&op.node.selection_set);
    }
    for fragment in doc.fragments.values() {
        tally.walk(&fragment.node.selection_set);
    }
    RequestDocument { operation, aliases: tally.aliases, introspection: tally.introspection }
}

#[derive(Default)]
struct Tally {
    aliases: usize,
    introspection: bool,
}

impl Tally {
    fn walk(&mut self, set: &Positioned<SelectionSet>) {
        for item in &set.node.items {
            match &item.node {
                Selection::Field(field) => {
                    self.aliases += usize::from(field.node.alias.is_some());
                    let name = field.node.name.node.as_str();
                    self.introspection |= name == "__schema" || name == "__type";
                    self.walk(&field.node.selection_set);
                }
                Selection::InlineFragment(fragment) => self.walk(&fragment.node.selection_set),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aliases_in_operations_and_fragments() {
        let doc = async_graphql::parser::parse_query(
            "query Q { a: viewer { t: tenant } ...F } fragment F on Query { b: viewer { tenant } } mutation M { __typename }",
        )
        .unwrap();
        let seen = inspect(&doc, Some("Q"));
        assert_eq!(seen.aliases, 3);
        assert_eq!(seen.operation, Some(OperationKind::Query));
        assert_eq!(inspect(&doc, Some("M")).operation, Some(OperationKind::Mutation));
        assert_eq!(inspect(&doc, None).operation, None);
        assert!(!seen.introspection);
        let doc = async_graphql::parser::parse_query("{ ... on Query { __type(name: \"Query\") { name } } }").unwrap();
        assert!(inspect(&doc, None).introspection);
    }
}
