//! The definition language of computed traits and segments (issue 10): a declarative JSON body per definition,
//! checked before it is stored (bounded size and depth, known references, no cycles) and evaluated for one customer
//! from their touchpoints, traits, identities and latest feedback. Windows are relative to the moment of
//! evaluation, so a value is exact whenever it is read; [`Evaluation::changes_at`] says when time alone could change
//! it (the oldest touchpoint leaving a window), which is when a window-expiry event is due.
//!
//! Pure: no database. The service that stores versions, evaluates at read and maintains memberships builds on it.
//!
//! ```json
//! { "aggregate": "SUM", "of": "value", "filter": { "types": ["PURCHASE"] }, "window": { "lastDays": 90 } }
//! { "all": [ { "hasIdentity": "EMAIL" },
//!            { "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] }, "window": { "lastDays": 30 } },
//!              "op": "GTE", "value": 2 },
//!            { "not": { "latestFeedback": { "metric": "NPS", "category": "DETRACTOR" } } } ] }
//! ```
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::{ApiError, ApiResult},
    profiles::IdentityKind,
    touchpoints::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
};

/// At most this many nodes (conditions and aggregations) in one body.
pub const MAX_NODES: usize = 64;
/// At most this deep.
pub const MAX_DEPTH: usize = 8;
/// At most this many values in one list (types, channels, `IN` operands, …).
pub const MAX_LIST: usize = 50;
/// A window reaches back at most this far.
pub const MAX_WINDOW_DAYS: u32 = 3660;
/// `TOP` and `UNIQUE` answer at most this many values.
pub const MAX_VALUES: usize = 100;

/// How an aggregation folds the touchpoints it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Fold {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// The earliest selected touchpoint's value (and `FIRST_AT`: its time).
    First,
    FirstAt,
    Last,
    LastAt,
    /// The `k` most frequent values, most frequent first.
    Top,
    /// The distinct values, first seen first, at most `k`.
    Unique,
}

/// Which touchpoints an aggregation selects. Every list given must contain the touchpoint's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub types: Vec<TouchpointType>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub stages: Vec<JourneyStage>,
    /// `properties[key] == equals` for each.
    #[serde(default)]
    pub properties: Vec<PropertyEquals>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyEquals {
    pub key: String,
    pub equals: Value,
}

/// When, relative to the moment of evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Window {
    /// Within the last N days.
    LastDays(u32),
    /// Between two instants (fixed).
    Between { from: DateTime<Utc>, to: DateTime<Utc> },
    /// Older than N days.
    OlderThanDays(u32),
}

/// A computed value over a customer's touchpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregation {
    pub aggregate: Fold,
    /// What is folded: `value` (the touchpoint's value) or a property name. Not used by `COUNT`, `FIRST_AT`,
    /// `LAST_AT`.
    #[serde(default)]
    pub of: Option<String>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub window: Option<Window>,
    /// `TOP` and `UNIQUE`: how many values (default 5).
    #[serde(default)]
    pub k: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    /// The value is one of `value` (a list).
    In,
    /// The left side is present (not null, not an empty list).
    Exists,
    /// A list value contains `value`.
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeedbackGroup {
    Promoter,
    Passive,
    Detractor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestFeedback {
    pub metric: FeedbackMetric,
    /// The group the latest answer of the metric falls in (NPS promoter/passive/detractor; CSAT and CES use the
    /// same three: best, middle, worst).
    pub category: FeedbackGroup,
}

/// A condition on a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", untagged)]
pub enum Condition {
    All {
        all: Vec<Condition>,
    },
    Any {
        any: Vec<Condition>,
    },
    Not {
        not: Box<Condition>,
    },
    Compare(Compare),
    HasIdentity {
        #[serde(rename = "hasIdentity")]
        has_identity: IdentityKindName,
    },
    InSegment {
        #[serde(rename = "inSegment")]
        in_segment: String,
    },
    LatestFeedback {
        #[serde(rename = "latestFeedback")]
        latest_feedback: LatestFeedback,
    },
}

/// An identity kind as the API names it (`EMAIL`, `PHONE`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdentityKindName {
    Email,
    Phone,
    DeviceId,
    AnonymousId,
    LoyaltyId,
    CrmId,
    ExternalId,
}

impl IdentityKindName {
    fn kind(self) -> IdentityKind {
        match self {
            IdentityKindName::Email => IdentityKind::Email,
            IdentityKindName::Phone => IdentityKind::Phone,
            IdentityKindName::DeviceId => IdentityKind::DeviceId,
            IdentityKindName::AnonymousId => IdentityKind::AnonymousId,
            IdentityKindName::LoyaltyId => IdentityKind::LoyaltyId,
            IdentityKindName::CrmId => IdentityKind::CrmId,
            IdentityKindName::ExternalId => IdentityKind::ExternalId,
        }
    }
}

/// The left side of a comparison: exactly one of an aggregation, a profile trait, or a computed trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compare {
    #[serde(default)]
    pub aggregate: Option<Box<Aggregation>>,
    #[serde(default, rename = "trait")]
    pub profile_trait: Option<String>,
    #[serde(default)]
    pub computed_trait: Option<String>,
    pub op: Op,
    #[serde(default)]
    pub value: Value,
}

/// A definition's body: a computed trait is an aggregation, a segment a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    ComputedTrait(Aggregation),
    Segment(Condition),
}

/// What a reference names: the other definitions a body may use.
pub trait References {
    /// The body of the computed trait `key`, if the tenant has one.
    fn computed_trait(&self, key: &str) -> Option<&Aggregation>;
    /// The condition of the segment `key`, if the tenant has one.
    fn segment(&self, key: &str) -> Option<&Condition>;
}

impl References for HashMap<String, Body> {
    fn computed_trait(&self, key: &str) -> Option<&Aggregation> {
        match self.get(key) {
            Some(Body::ComputedTrait(a)) => Some(a),
            _ => None,
        }
    }

    fn segment(&self, key: &str) -> Option<&Condition> {
        match self.get(key) {
            Some(Body::Segment(c)) => Some(c),
            _ => None,
        }
    }
}

/// Parses a body from its JSON; a refusal names the place and what is wrong (`condition.all[1].aggregate.window`).
pub fn parse(kind_is_segment: bool, json: &Value) -> ApiResult<Body> {
    if kind_is_segment {
        parse_condition(json, "condition").map(Body::Segment)
    } else {
        typed::<Aggregation>(json, "aggregation").map(Body::ComputedTrait)
    }
}

fn typed<T: serde::de::DeserializeOwned>(json: &Value, at: &str) -> ApiResult<T> {
    serde_json::from_value::<T>(json.clone()).map_err(|e| ApiError::validation(at, e.to_string()))
}

fn parse_condition(json: &Value, at: &str) -> ApiResult<Condition> {
    let Some(obj) = json.as_object() else { return Err(ApiError::validation(at, "a condition object")) };
    let only = |key: &str| -> ApiResult<()> {
        match obj.len() {
            1 => Ok(()),
            _ => Err(ApiError::validation(at, format!("`{key}` stands alone in its object"))),
        }
    };
    let list = |key: &str| -> ApiResult<Vec<Condition>> {
        only(key)?;
        let items = obj
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::validation(format!("{at}.{key}"), "a list of conditions"))?;
        items.iter().enumerate().map(|(i, c)| parse_condition(c, &format!("{at}.{key}[{i}]"))).collect()
    };
    if obj.contains_key("all") {
        return Ok(Condition::All { all: list("all")? });
    }
    if obj.contains_key("any") {
        return Ok(Condition::Any { any: list("any")? });
    }
    if let Some(inner) = obj.get("not") {
        only("not")?;
        return Ok(Condition::Not { not: Box::new(parse_condition(inner, &format!("{at}.not"))?) });
    }
    if let Some(kind) = obj.get("hasIdentity") {
        only("hasIdentity")?;
        return Ok(Condition::HasIdentity { has_identity: typed(kind, &format!("{at}.hasIdentity"))? });
    }
    if let Some(key) = obj.get("inSegment") {
        only("inSegment")?;
        return Ok(Condition::InSegment { in_segment: typed(key, &format!("{at}.inSegment"))? });
    }
    if let Some(latest) = obj.get("latestFeedback") {
        only("latestFeedback")?;
        return Ok(Condition::LatestFeedback { latest_feedback: typed(latest, &format!("{at}.latestFeedback"))? });
    }
    if obj.contains_key("op") {
        return Ok(Condition::Compare(typed(json, at)?));
    }
    Err(ApiError::validation(
        at,
        "one of `all`, `any`, `not`, `hasIdentity`, `inSegment`, `latestFeedback`, or a comparison with `op`",
    ))
}

/// Checks a body that would be stored under `key`: size and depth, windows, operands, references to definitions
/// the tenant has, and no cycle through them (a segment that needs itself, directly or not).
pub fn validate(key: &str, body: &Body, refs: &impl References) -> ApiResult<()> {
    let mut nodes = 0;
    match body {
        Body::ComputedTrait(a) => check_aggregation(a, "aggregation", &mut nodes)?,
        Body::Segment(c) => check_condition(c, "condition", 1, &mut nodes, refs)?,
    }
    // Cycles: walk the references from this body; reaching `key` again is a cycle.
    let mut seen = HashSet::new();
    let mut stack: Vec<String> = references_of(body);
    while let Some(next) = stack.pop() {
        if next == key {
            return Err(ApiError::validation("condition", format!("`{key}` refers to itself through its references")));
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(c) = refs.segment(&next) {
            stack.extend(references_of(&Body::Segment(c.clone())));
        }
    }
    Ok(())
}

/// The definition keys a body refers to.
pub fn references_of(body: &Body) -> Vec<String> {
    fn walk(c: &Condition, out: &mut Vec<String>) {
        match c {
            Condition::All { all } => all.iter().for_each(|c| walk(c, out)),
            Condition::Any { any } => any.iter().for_each(|c| walk(c, out)),
            Condition::Not { not } => walk(not, out),
            Condition::InSegment { in_segment } => out.push(in_segment.clone()),
            Condition::Compare(Compare { computed_trait: Some(k), .. }) => out.push(k.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Body::Segment(c) = body {
        walk(c, &mut out);
    }
    out
}

fn check_aggregation(a: &Aggregation, at: &str, nodes: &mut usize) -> ApiResult<()> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(ApiError::validation(at, format!("more than {MAX_NODES} conditions and aggregations")));
    }
    let f = &a.filter;
    if f.types.len() > MAX_LIST
        || f.channels.len() > MAX_LIST
        || f.stages.len() > MAX_LIST
        || f.properties.len() > MAX_LIST
    {
        return Err(ApiError::validation(format!("{at}.filter"), format!("at most {MAX_LIST} values per list")));
    }
    if f.properties.iter().any(|p| p.key.is_empty() || p.key.len() > 128) {
        return Err(ApiError::validation(format!("{at}.filter.properties"), "keys of 1–128 characters"));
    }
    let needs_of = !matches!(a.aggregate, Fold::Count | Fold::FirstAt | Fold::LastAt);
    match (&a.of, needs_of) {
        (None, true) => return Err(ApiError::validation(format!("{at}.of"), "`value` or a property name")),
        (Some(of), _) if of.is_empty() || of.len() > 128 => {
            return Err(ApiError::validation(format!("{at}.of"), "`value` or a property name of 1–128 characters"));
        }
        _ => {}
    }
    if let Some(k) = a.k
        && !(1..=MAX_VALUES).contains(&k)
    {
        return Err(ApiError::validation(format!("{at}.k"), format!("from 1 to {MAX_VALUES}")));
    }
    match &a.window {
        Some(Window::LastDays(n) | Window::OlderThanDays(n)) if *n == 0 || *n > MAX_WINDOW_DAYS => {
            Err(ApiError::validation(format!("{at}.window"), format!("from 1 to {MAX_WINDOW_DAYS} days")))
        }
        Some(Window::Between { from, to }) if from >= to => {
            Err(ApiError::validation(format!("{at}.window"), "`from` must be before `to`"))
        }
        _ => Ok(()),
    }
}

fn check_condition(c: &Condition, at: &str, depth: usize, nodes: &mut usize, refs: &impl References) -> ApiResult<()> {
    if depth > MAX_DEPTH {
        return Err(ApiError::validation(at, format!("nested deeper than {MAX_DEPTH}")));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(ApiError::validation(at, format!("more than {MAX_NODES} conditions and aggregations")));
    }
    match c {
        Condition::All { all: list } | Condition::Any { any: list } => {
            if list.is_empty() || list.len() > MAX_LIST {
                return Err(ApiError::validation(at, format!("1 to {MAX_LIST} conditions")));
            }
            for (i, c) in list.iter().enumerate() {
                check_condition(c, &format!("{at}[{i}]"), depth + 1, nodes, refs)?;
            }
            Ok(())
        }
        Condition::Not { not } => check_condition(not, &format!("{at}.not"), depth + 1, nodes, refs),
        Condition::InSegment { in_segment } => match refs.segment(in_segment) {
            Some(_) => Ok(()),
            None => Err(ApiError::validation(format!("{at}.inSegment"), format!("no segment `{in_segment}`"))),
        },
        Condition::HasIdentity { .. } | Condition::LatestFeedback { .. } => Ok(()),
        Condition::Compare(cmp) => {
            let sides = usize::from(cmp.aggregate.is_some())
                + usize::from(cmp.profile_trait.is_some())
                + usize::from(cmp.computed_trait.is_some());
            if sides != 1 {
                return Err(ApiError::validation(at, "compare exactly one of `aggregate`, `trait`, `computedTrait`"));
            }
            if let Some(a) = &cmp.aggregate {
                check_aggregation(a, &format!("{at}.aggregate"), nodes)?;
            }
            if let Some(k) = &cmp.computed_trait
                && refs.computed_trait(k).is_none()
            {
                return Err(ApiError::validation(format!("{at}.computedTrait"), format!("no computed trait `{k}`")));
            }
            match (cmp.op, &cmp.value) {
                (Op::In, Value::Array(list)) if !list.is_empty() && list.len() <= MAX_LIST => Ok(()),
                (Op::In, _) => {
                    Err(ApiError::validation(format!("{at}.value"), format!("`IN` takes a list of 1 to {MAX_LIST}")))
                }
                (Op::Exists, _) => Ok(()),
                (_, Value::Null) => Err(ApiError::validation(format!("{at}.value"), "a value to compare with")),
                _ => Ok(()),
            }
        }
    }
}

/// One touchpoint as a definition sees it.
#[derive(Debug, Clone)]
pub struct Fact {
    pub at: DateTime<Utc>,
    pub kind: TouchpointType,
    pub channel: Channel,
    pub stage: JourneyStage,
    pub value: Option<f64>,
    pub properties: Option<Value>,
}

/// What a definition is evaluated over: one customer at one moment.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub now: DateTime<Utc>,
    /// The customer's touchpoints (any order).
    pub touchpoints: &'a [Fact],
    /// Winning profile traits by name.
    pub traits: &'a HashMap<String, Value>,
    pub identities: &'a [IdentityKind],
    /// The latest answer per metric (score).
    pub latest_feedback: &'a HashMap<FeedbackMetric, i32>,
}

/// A result and when time alone could change it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<T> {
    pub value: T,
    /// The earliest moment a window's edge passes one of the touchpoints it selects or leaves out (`None`: never).
    pub changes_at: Option<DateTime<Utc>>,
}

struct Evaluator<'s, 'r, R: References> {
    subject: &'s Subject<'s>,
    refs: &'r R,
    changes_at: Option<DateTime<Utc>>,
    segments: HashMap<String, bool>,
    /// Guards against a cycle that slipped past validation (definitions changed since).
    visiting: HashSet<String>,
}

impl<R: References> Evaluator<'_, '_, R> {
    fn selected(&mut self, a: &Aggregation) -> Vec<&Fact> {
        let now = self.subject.now;
        let f = &a.filter;
        let mut out: Vec<&Fact> = Vec::new();
        for t in self.subject.touchpoints {
            let matches = (f.types.is_empty() || f.types.contains(&t.kind))
                && (f.channels.is_empty() || f.channels.contains(&t.channel))
                && (f.stages.is_empty() || f.stages.contains(&t.stage))
                && f.properties
                    .iter()
                    .all(|p| t.properties.as_ref().and_then(|props| props.get(&p.key)) == Some(&p.equals));
            if !matches || t.at > now {
                continue;
            }
            let inside = match &a.window {
                None => true,
                Some(Window::LastDays(n)) => {
                    let edge = t.at + Duration::days(i64::from(*n));
                    // It leaves the window when `now` passes `edge`.
                    if edge > now {
                        self.changes_at = Some(self.changes_at.map_or(edge, |c| c.min(edge)));
                        true
                    } else {
                        false
                    }
                }
                Some(Window::OlderThanDays(n)) => {
                    let edge = t.at + Duration::days(i64::from(*n));
                    if edge <= now {
                        true
                    } else {
                        self.changes_at = Some(self.changes_at.map_or(edge, |c| c.min(edge)));
                        false
                    }
                }
                Some(Window::Between { from, to }) => t.at >= *from && t.at < *to,
            };
            if inside {
                out.push(t);
            }
        }
        out.sort_by_key(|t| t.at);
        out
    }

    fn aggregate(&mut self, a: &Aggregation) -> Value {
        let selected = self.selected(a);
        let of = |t: &Fact| -> Option<Value> {
            match a.of.as_deref() {
                Some("value") => t.value.and_then(|v| serde_json::Number::from_f64(v).map(Value::Number)),
                Some(key) => t.properties.as_ref().and_then(|p| p.get(key)).filter(|v| !v.is_null()).cloned(),
                None => None,
            }
        };
        let numbers = || selected.iter().filter_map(|t| of(t)).filter_map(|v| v.as_f64()).collect::<Vec<f64>>();
        let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        let k = a.k.unwrap_or(5);
        match a.aggregate {
            Fold::Count => Value::from(selected.len() as u64),
            Fold::Sum => number(numbers().iter().sum()),
            Fold::Min => numbers().into_iter().reduce(f64::min).map_or(Value::Null, number),
            Fold::Max => numbers().into_iter().reduce(f64::max).map_or(Value::Null, number),
            Fold::Avg => {
                let n = numbers();
                if n.is_empty() { Value::Null } else { number(n.iter().sum::<f64>() / n.len() as f64) }
            }
            Fold::First => selected.iter().find_map(|t| of(t)).unwrap_or(Value::Null),
            Fold::Last => selected.iter().rev().find_map(|t| of(t)).unwrap_or(Value::Null),
            Fold::FirstAt => selected.first().map_or(Value::Null, |t| Value::from(t.at.to_rfc3339())),
            Fold::LastAt => selected.last().map_or(Value::Null, |t| Value::from(t.at.to_rfc3339())),
            Fold::Top => {
                let mut counts: Vec<(String, u64, DateTime<Utc>)> = Vec::new();
                for t in &selected {
                    let Some(v) = of(t) else { continue };
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    match counts.iter_mut().find(|(s, _, _)| *s == text) {
                        Some(entry) => {
                            entry.1 += 1;
                            entry.2 = entry.2.max(t.at);
                        }
                        None => counts.push((text, 1, t.at)),
                    }
                }
                counts.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
                Value::Array(counts.into_iter().take(k).map(|(s, _, _)| Value::String(s)).collect())
            }
            Fold::Unique => {
                let mut seen: Vec<Value> = Vec::new();
                for t in &selected {
                    if let Some(v) = of(t)
                        && !seen.contains(&v)
                    {
                        seen.push(v);
                        if seen.len() == k {
                            break;
                        }
                    }
                }
                Value::Array(seen)
            }
        }
    }

    fn condition(&mut self, c: &Condition) -> bool {
        match c {
            Condition::All { all } => {
                // Every operand is evaluated, so `changes_at` covers each window that could flip the result.
                let results: Vec<bool> = all.iter().map(|c| self.condition(c)).collect();
                results.into_iter().all(|b| b)
            }
            Condition::Any { any } => {
                let results: Vec<bool> = any.iter().map(|c| self.condition(c)).collect();
                results.into_iter().any(|b| b)
            }
            Condition::Not { not } => !self.condition(not),
            Condition::HasIdentity { has_identity } => self.subject.identities.contains(&has_identity.kind()),
            Condition::LatestFeedback { latest_feedback } => {
                self.subject.latest_feedback.get(&latest_feedback.metric).is_some_and(|score| {
                    let group = crate::cx::stats::group_of(latest_feedback.metric, *score);
                    let wanted = match latest_feedback.category {
                        FeedbackGroup::Promoter => 0,
                        FeedbackGroup::Passive => 1,
                        FeedbackGroup::Detractor => 2,
                    };
                    group == wanted
                })
            }
            Condition::InSegment { in_segment } => {
                if let Some(known) = self.segments.get(in_segment) {
                    return *known;
                }
                let Some(inner) = self.refs.segment(in_segment).cloned() else { return false };
                if !self.visiting.insert(in_segment.clone()) {
                    return false;
                }
                let result = self.condition(&inner);
                self.visiting.remove(in_segment);
                self.segments.insert(in_segment.clone(), result);
                result
            }
            Condition::Compare(cmp) => {
                let left = if let Some(a) = &cmp.aggregate {
                    self.aggregate(a)
                } else if let Some(name) = &cmp.profile_trait {
                    self.subject.traits.get(name).cloned().unwrap_or(Value::Null)
                } else if let Some(key) = &cmp.computed_trait {
                    match self.refs.computed_trait(key).cloned() {
                        Some(a) => self.aggregate(&a),
                        None => Value::Null,
                    }
                } else {
                    Value::Null
                };
                compare(&left, cmp.op, &cmp.value)
            }
        }
    }
}

fn compare(left: &Value, op: Op, right: &Value) -> bool {
    let present = !(left.is_null() || left.as_array().is_some_and(Vec::is_empty));
    match op {
        Op::Exists => present,
        Op::Eq => loose_eq(left, right),
        Op::Ne => present && !loose_eq(left, right),
        Op::In => right.as_array().is_some_and(|list| list.iter().any(|r| loose_eq(left, r))),
        Op::Contains => left.as_array().is_some_and(|list| list.iter().any(|l| loose_eq(l, right))),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let ordering = match (left.as_f64(), right.as_f64()) {
                (Some(l), Some(r)) => l.partial_cmp(&r),
                _ => match (left.as_str(), right.as_str()) {
                    (Some(l), Some(r)) => Some(l.cmp(r)),
                    _ => None,
                },
            };
            ordering.is_some_and(|o| match op {
                Op::Gt => o.is_gt(),
                Op::Gte => o.is_ge(),
                Op::Lt => o.is_lt(),
                _ => o.is_le(),
            })
        }
    }
}

/// Numbers compare by value (3 == 3.0); everything else as JSON.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Evaluates a computed trait for one subject.
pub fn evaluate_trait(a: &Aggregation, subject: &Subject<'_>, refs: &impl References) -> Evaluation<Value> {
    let mut e = Evaluator { subject, refs, changes_at: None, segments: HashMap::new(), visiting: HashSet::new() };
    let value = e.aggregate(a);
    Evaluation { value, changes_at: e.changes_at }
}

/// Evaluates a segment's condition for one subject: whether the customer is in it now.
pub fn evaluate_segment(c: &Condition, subject: &Subject<'_>, refs: &impl References) -> Evaluation<bool> {
    let mut e = Evaluator { subject, refs, changes_at: None, segments: HashMap::new(), visiting: HashSet::new() };
    let value = e.condition(c);
    Evaluation { value, changes_at: e.changes_at }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fact(days_ago: i64, kind: TouchpointType, value: Option<f64>, props: Value, now: DateTime<Utc>) -> Fact {
        Fact {
            at: now - Duration::days(days_ago),
            kind,
            channel: Channel::Web,
            stage: JourneyStage::default_for(kind, Channel::Web),
            value,
            properties: Some(props),
        }
    }

    fn segment(json: Value) -> Condition {
        match parse(true, &json).expect("a condition") {
            Body::Segment(c) => c,
            Body::ComputedTrait(_) => unreachable!(),
        }
    }

    fn aggregation(json: Value) -> Aggregation {
        match parse(false, &json).expect("an aggregation") {
            Body::ComputedTrait(a) => a,
            Body::Segment(_) => unreachable!(),
        }
    }

    fn field_of(err: ApiError) -> (String, String) {
        match err {
            ApiError::Validation { field, message } => (field, message),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn a_refused_body_names_the_place_and_the_problem() {
        let body = json!({ "all": [
            { "hasIdentity": "EMAIL" },
            { "aggregate": { "aggregate": "COUNT", "window": { "lastWeeks": 3 } }, "op": "GTE", "value": 1 },
        ] });
        let (field, message) = field_of(parse(true, &body).expect_err("unknown window"));
        assert_eq!(field, "condition.all[1]");
        assert!(message.contains("lastWeeks"), "{message}");
        let (field, message) = field_of(parse(true, &json!({ "all": [{ "hasIdentity": "FAX" }] })).expect_err("kind"));
        assert_eq!(field, "condition.all[0].hasIdentity");
        assert!(message.contains("FAX"), "{message}");
        let (field, _) = field_of(parse(true, &json!({ "any": [{ "nope": 1 }] })).expect_err("shape"));
        assert_eq!(field, "condition.any[0]");
        let (_, message) = field_of(
            parse(false, &json!({ "aggregate": "SUM", "filter": { "types": ["PURCHASE", "TELEGRAM"] } }))
                .expect_err("type"),
        );
        assert!(message.contains("TELEGRAM"), "{message}");
    }

    #[test]
    fn validation_refuses_unknown_references_cycles_and_oversized_bodies() {
        let mut refs: HashMap<String, Body> = HashMap::new();
        let b = segment(json!({ "inSegment": "a" }));
        let (field, _) = field_of(validate("b", &Body::Segment(b.clone()), &refs).expect_err("no segment a"));
        assert_eq!(field, "condition.inSegment");
        refs.insert("a".into(), Body::Segment(segment(json!({ "inSegment": "b" }))));
        let (_, message) = field_of(validate("b", &Body::Segment(b), &refs).expect_err("a cycle"));
        assert!(message.contains("refers to itself"), "{message}");
        // Depth 9.
        let mut deep = json!({ "hasIdentity": "EMAIL" });
        for _ in 0..9 {
            deep = json!({ "not": deep });
        }
        assert!(validate("d", &Body::Segment(segment(deep)), &refs).is_err());
        // 121 nodes: 40 pairs under one `any`.
        let pair = json!({ "any": [{ "hasIdentity": "EMAIL" }, { "hasIdentity": "PHONE" }] });
        let wide = json!({ "any": (0..40).map(|_| pair.clone()).collect::<Vec<_>>() });
        let (_, message) = field_of(validate("w", &Body::Segment(segment(wide)), &refs).expect_err("too many"));
        assert!(message.contains("more than 64"), "{message}");
        let bad_in = segment(json!({ "trait": "tier", "op": "IN", "value": "gold" }));
        assert!(validate("i", &Body::Segment(bad_in), &refs).is_err());
        let no_of = aggregation(json!({ "aggregate": "SUM" }));
        let (field, _) = field_of(validate("s", &Body::ComputedTrait(no_of), &refs).expect_err("of"));
        assert_eq!(field, "aggregation.of");
    }

    #[test]
    fn a_seven_day_window_is_exact_and_says_when_it_expires() {
        let now = Utc::now();
        let touchpoints = vec![fact(3, TouchpointType::Purchase, Some(40.0), json!({}), now)];
        let (traits, feedback) = (HashMap::new(), HashMap::new());
        let subject =
            Subject { now, touchpoints: &touchpoints, traits: &traits, identities: &[], latest_feedback: &feedback };
        let bought = segment(json!({ "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] },
                                                    "window": { "lastDays": 7 } }, "op": "GTE", "value": 1 }));
        let refs: HashMap<String, Body> = HashMap::new();
        let now_in = evaluate_segment(&bought, &subject, &refs);
        assert!(now_in.value);
        assert_eq!(now_in.changes_at, Some(touchpoints[0].at + Duration::days(7)), "leaves 7 days after the purchase");
        // A moment after that edge, the same customer is out, and nothing more will change by time alone.
        let later = Subject { now: touchpoints[0].at + Duration::days(7) + Duration::seconds(1), ..subject.clone() };
        let out = evaluate_segment(&bought, &later, &refs);
        assert!(!out.value);
        assert_eq!(out.changes_at, None);
        // "Not within 7 days" is the negation, with the same edge.
        let lapsed = segment(
            json!({ "not": { "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] },
                                                              "window": { "lastDays": 7 } }, "op": "GTE", "value": 1 } }),
        );
        assert!(!evaluate_segment(&lapsed, &subject, &refs).value);
        assert!(evaluate_segment(&lapsed, &later, &refs).value);
    }

    #[test]
    fn aggregations_fold_what_they_select() {
        let now = Utc::now();
        let touchpoints = vec![
            fact(30, TouchpointType::Purchase, Some(10.0), json!({ "category": "shoes" }), now),
            fact(20, TouchpointType::Purchase, Some(30.0), json!({ "category": "bags" }), now),
            fact(10, TouchpointType::Purchase, Some(20.0), json!({ "category": "shoes" }), now),
            fact(5, TouchpointType::PageView, None, json!({ "category": "hats" }), now),
            fact(400, TouchpointType::Purchase, Some(1000.0), json!({ "category": "coats" }), now),
        ];
        let (traits, feedback) = (HashMap::new(), HashMap::new());
        let subject =
            Subject { now, touchpoints: &touchpoints, traits: &traits, identities: &[], latest_feedback: &feedback };
        let refs: HashMap<String, Body> = HashMap::new();
        let run = |json: Value| evaluate_trait(&aggregation(json), &subject, &refs).value;
        let purchases = json!({ "types": ["PURCHASE"] });
        let year = json!({ "lastDays": 365 });
        assert_eq!(run(json!({ "aggregate": "COUNT", "filter": purchases, "window": year })), json!(3));
        assert_eq!(run(json!({ "aggregate": "SUM", "of": "value", "filter": purchases, "window": year })), json!(60.0));
        assert_eq!(run(json!({ "aggregate": "AVG", "of": "value", "filter": purchases, "window": year })), json!(20.0));
        assert_eq!(run(json!({ "aggregate": "MIN", "of": "value", "filter": purchases })), json!(10.0));
        assert_eq!(run(json!({ "aggregate": "MAX", "of": "value", "filter": purchases })), json!(1000.0));
        assert_eq!(
            run(json!({ "aggregate": "FIRST", "of": "category", "filter": purchases, "window": year })),
            json!("shoes")
        );
        assert_eq!(run(json!({ "aggregate": "LAST", "of": "category" })), json!("hats"));
        assert_eq!(
            run(json!({ "aggregate": "TOP", "of": "category", "k": 2, "window": year })),
            json!(["shoes", "hats"])
        );
        assert_eq!(
            run(json!({ "aggregate": "UNIQUE", "of": "category", "window": year })),
            json!(["shoes", "bags", "hats"])
        );
        assert_eq!(run(json!({ "aggregate": "COUNT", "window": { "olderThanDays": 100 } })), json!(1));
        assert_eq!(run(json!({ "aggregate": "SUM", "of": "value", "filter": { "types": ["RETURN"] } })), json!(0.0));
        assert_eq!(run(json!({ "aggregate": "AVG", "of": "value", "filter": { "types": ["RETURN"] } })), Value::Null);
    }

    #[test]
    fn conditions_combine_traits_identities_feedback_and_other_definitions() {
        let now = Utc::now();
        let touchpoints = vec![fact(2, TouchpointType::Purchase, Some(500.0), json!({}), now)];
        let traits: HashMap<String, Value> = [("tier".to_owned(), json!("gold"))].into_iter().collect();
        let feedback: HashMap<FeedbackMetric, i32> = [(FeedbackMetric::Nps, 4)].into_iter().collect();
        let identities = [IdentityKind::Email];
        let subject = Subject {
            now,
            touchpoints: &touchpoints,
            traits: &traits,
            identities: &identities,
            latest_feedback: &feedback,
        };
        let mut refs: HashMap<String, Body> = HashMap::new();
        refs.insert(
            "spend_90d".into(),
            Body::ComputedTrait(aggregation(
                json!({ "aggregate": "SUM", "of": "value", "window": { "lastDays": 90 } }),
            )),
        );
        refs.insert(
            "big".into(),
            Body::Segment(segment(json!({ "computedTrait": "spend_90d", "op": "GTE", "value": 100 }))),
        );
        let vip_at_risk = segment(json!({ "all": [
            { "inSegment": "big" },
            { "hasIdentity": "EMAIL" },
            { "trait": "tier", "op": "IN", "value": ["gold", "platinum"] },
            { "latestFeedback": { "metric": "NPS", "category": "DETRACTOR" } },
            { "not": { "hasIdentity": "PHONE" } },
        ] }));
        validate("vip_at_risk", &Body::Segment(vip_at_risk.clone()), &refs).expect("valid");
        assert!(evaluate_segment(&vip_at_risk, &subject, &refs).value);
        let promoters = segment(json!({ "latestFeedback": { "metric": "NPS", "category": "PROMOTER" } }));
        assert!(!evaluate_segment(&promoters, &subject, &refs).value);
        let unknown_trait = segment(json!({ "trait": "missing", "op": "EXISTS" }));
        assert!(!evaluate_segment(&unknown_trait, &subject, &refs).value);
        // A body survives a round trip through its stored JSON.
        let stored = serde_json::to_value(&vip_at_risk).expect("json");
        assert_eq!(segment(stored), vip_at_risk);
    }
}
