//! Looks at a request document before validation: which operation runs, how many aliases it uses, and how deep
//! and how large its selection is once fragments are expanded — measured without expanding them (each fragment
//! is measured once and remembered), so a document of fragments spreading each other cannot cost time or memory
//! before a limit refuses it.
use std::collections::HashMap;

use async_graphql::Value;
use async_graphql::parser::{
    Positioned,
    types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet},
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
    /// Deepest field nesting of the selected operation with fragments expanded. Introspection (`__schema`,
    /// `__type`) counts as one level: the standard introspection query of graphql-js nests `ofType` far deeper
    /// than any data query, and its size is still counted.
    pub depth: usize,
    /// Fields the selected operation resolves with every fragment expanded (saturating).
    pub expanded_fields: usize,
}

/// The operation that runs for `operation_name`, as async-graphql picks it.
fn selected<'d>(
    doc: &'d ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'d Positioned<OperationDefinition>> {
    match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The kind of the operation that runs (what a transport's own rules need: GET runs no mutation, HTTP no
/// subscription); `None` when the name does not match.
pub fn operation_kind(doc: &ExecutableDocument, operation_name: Option<&str>) -> Option<OperationKind> {
    selected(doc, operation_name).map(|op| match op.node.ty {
        OperationType::Query => OperationKind::Query,
        OperationType::Mutation => OperationKind::Mutation,
        OperationType::Subscription => OperationKind::Subscription,
    })
}

pub fn inspect(doc: &ExecutableDocument, operation_name: Option<&str>) -> RequestDocument {
    let selected = selected(doc, operation_name);
    let operation = operation_kind(doc, operation_name);
    let mut tally = Tally::default();
    for (_, op) in doc.operations.iter() {
        tally.walk(&op.node.selection_set);
    }
    for fragment in doc.fragments.values() {
        tally.walk(&fragment.node.selection_set);
    }
    let (depth, expanded_fields) = match selected {
        Some(op) => Measure { doc, memo: HashMap::new(), visiting: Vec::new() }.set(&op.node.selection_set),
        None => (0, 0),
    };
    RequestDocument { operation, aliases: tally.aliases, introspection: tally.introspection, depth, expanded_fields }
}

/// Depth and expanded size of selections, one fragment at a time.
struct Measure<'d> {
    doc: &'d ExecutableDocument,
    memo: HashMap<&'d str, (usize, usize)>,
    /// Fragments being measured: a spread of one of them is a cycle, which validation reports.
    visiting: Vec<&'d str>,
}

impl<'d> Measure<'d> {
    fn set(&mut self, set: &'d Positioned<SelectionSet>) -> (usize, usize) {
        let (mut depth, mut size) = (0usize, 0usize);
        for item in &set.node.items {
            let (d, s) = match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let (d, s) = self.set(&field.node.selection_set);
                    let d = if name == "__schema" || name == "__type" { 0 } else { d };
                    (d + 1, s.saturating_add(1))
                }
                Selection::InlineFragment(fragment) => self.set(&fragment.node.selection_set),
                Selection::FragmentSpread(spread) => self.fragment(spread.node.fragment_name.node.as_str()),
            };
            depth = depth.max(d);
            size = size.saturating_add(s);
        }
        (depth, size)
    }

    fn fragment(&mut self, name: &'d str) -> (usize, usize) {
        if let Some(known) = self.memo.get(name) {
            return *known;
        }
        let Some((key, fragment)) = self.doc.fragments.get_key_value(name) else { return (0, 0) };
        if self.visiting.contains(&key.as_str()) {
            return (0, 0);
        }
        self.visiting.push(key.as_str());
        let measured = self.set(&fragment.node.selection_set);
        self.visiting.pop();
        self.memo.insert(key.as_str(), measured);
        measured
    }
}

/// The response keys of a selection in the order the document selects them (CollectFields of the GraphQL spec:
/// fields, aliases and fragments in document order, a key selected twice where it first appears), with the order
/// of each key's own selection. async-graphql resolves an object's fields concurrently and lists them as they
/// finish, so a field that loads data can move; [`ResponseOrder::apply`] puts them back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResponseOrder {
    keys: Vec<(String, ResponseOrder)>,
}

impl ResponseOrder {
    /// The order of the operation that runs. Call it once the document is within the size limits (fragments are
    /// expanded here); a fragment spread inside itself is skipped (validation refuses it).
    pub fn of(doc: &ExecutableDocument, operation_name: Option<&str>) -> ResponseOrder {
        let mut order = ResponseOrder::default();
        if let Some(op) = selected(doc, operation_name) {
            order.collect(doc, &op.node.selection_set, &mut Vec::new());
        }
        order
    }

    fn collect<'d>(
        &mut self,
        doc: &'d ExecutableDocument,
        set: &'d Positioned<SelectionSet>,
        visiting: &mut Vec<&'d str>,
    ) {
        for item in &set.node.items {
            match &item.node {
                Selection::Field(field) => {
                    let key = field.node.response_key().node.as_str();
                    let at = match self.keys.iter().position(|(k, _)| k == key) {
                        Some(at) => at,
                        None => {
                            self.keys.push((key.to_owned(), ResponseOrder::default()));
                            self.keys.len() - 1
                        }
                    };
                    self.keys[at].1.collect(doc, &field.node.selection_set, visiting);
                }
                Selection::InlineFragment(fragment) => self.collect(doc, &fragment.node.selection_set, visiting),
                Selection::FragmentSpread(spread) => {
                    let Some((name, fragment)) = doc.fragments.get_key_value(&spread.node.fragment_name.node) else {
                        continue;
                    };
                    if visiting.contains(&name.as_str()) {
                        continue;
                    }
                    visiting.push(name.as_str());
                    self.collect(doc, &fragment.node.selection_set, visiting);
                    visiting.pop();
                }
            }
        }
    }

    /// Puts the keys of `value` (and of every object and list below it) in this order; keys the document does not
    /// name keep their place after the others.
    pub fn apply(&self, value: &mut Value) {
        match value {
            Value::Object(map) if !self.keys.is_empty() => {
                let mut rest = std::mem::take(map);
                let mut ordered = async_graphql::indexmap::IndexMap::with_capacity(rest.len());
                for (key, order) in &self.keys {
                    if let Some((name, mut child)) = rest.shift_remove_entry(key.as_str()) {
                        order.apply(&mut child);
                        ordered.insert(name, child);
                    }
                }
                ordered.extend(rest);
                *map = ordered;
            }
            Value::List(items) => items.iter_mut().for_each(|item| self.apply(item)),
            _ => {}
        }
    }
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

    #[test]
    fn measures_expanded_size_without_expanding() {
        // F0 is one field; each Fn spreads F(n-1) twice: 2^40 fields expanded, measured in 41 steps.
        let mut text = String::from("query { ...F40 } fragment F0 on Query { __typename }");
        for n in 1..=40 {
            text.push_str(&format!(" fragment F{n} on Query {{ ...F{m} ...F{m} }}", m = n - 1));
        }
        let doc = async_graphql::parser::parse_query(&text).unwrap();
        let seen = inspect(&doc, None);
        assert_eq!(seen.expanded_fields, 1usize << 40);
        assert_eq!(seen.depth, 1);
    }

    #[test]
    fn depth_counts_nested_fields_and_introspection_as_one_level() {
        let doc = async_graphql::parser::parse_query(
            "{ customers { edges { node { ...N } } } } fragment N on Customer { identities { kind } }",
        )
        .unwrap();
        let seen = inspect(&doc, None);
        assert_eq!((seen.depth, seen.expanded_fields), (5, 5));
        let doc = async_graphql::parser::parse_query(
            "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }",
        )
        .unwrap();
        assert_eq!(inspect(&doc, None).depth, 1);
    }
}
