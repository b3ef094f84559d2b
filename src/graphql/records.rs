//! Source records and traits: ingestion with per-item results, the record → customer lookup, trait rules.
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{profiles::IdentityInput, request};
use crate::{
    error::GqlResult,
    privacy::Disclosure,
    profiles::{
        records::{self, CustomerRecordInput as DomainRecordInput, RecordOutcome, SourceRecord},
        traits::{self, CustomTrait, SurvivorshipRule, TraitRule, TraitType},
    },
};

#[derive(InputObject, Default)]
pub struct AddressInput {
    line1: Option<String>,
    line2: Option<String>,
    postal_code: Option<String>,
    city: Option<String>,
    region: Option<String>,
    country: Option<String>,
}

/// The core traits, typed.
#[derive(InputObject, Default)]
pub struct CoreTraitsInput {
    given_name: Option<String>,
    family_name: Option<String>,
    emails: Option<Vec<String>>,
    phones: Option<Vec<String>>,
    addresses: Option<Vec<AddressInput>>,
    locale: Option<String>,
    /// ISO 3166 alpha-2.
    country: Option<String>,
    /// YYYY-MM-DD.
    birth_date: Option<String>,
    company: Option<String>,
}

/// A customer record as a source system holds it.
#[derive(InputObject)]
pub struct CustomerRecordInput {
    /// The system that holds the record: `crm`, `webshop`, `pos`, `support_desk`, …
    source: String,
    /// The record's id in that system. (source, sourceRecordId) identifies it: sending it again updates it.
    source_record_id: String,
    identities: Option<Vec<IdentityInput>>,
    traits: Option<CoreTraitsInput>,
    /// Traits the tenant declared in `traitRules.custom`, by name.
    custom_traits: Option<Json<Map<String, Value>>>,
    /// When the source last saw these values (defaults to the time Kontakt receives them). A record sent again
    /// with a later `observedAt` refreshes when its values were observed, so under MOST_RECENT a value the source
    /// confirms wins back. The same identities and traits again without `observedAt` are a replay: they keep the
    /// first receipt's time, change nothing and answer UNCHANGED.
    observed_at: Option<DateTime<Utc>>,
}

fn traits_map(core: CoreTraitsInput, custom: Option<Map<String, Value>>) -> Map<String, Value> {
    let mut map = custom.unwrap_or_default();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(name.to_owned(), value);
        }
    };
    put("givenName", core.given_name.map(Value::String));
    put("familyName", core.family_name.map(Value::String));
    put("emails", core.emails.map(|v| Value::Array(v.into_iter().map(Value::String).collect())));
    put("phones", core.phones.map(|v| Value::Array(v.into_iter().map(Value::String).collect())));
    put(
        "addresses",
        core.addresses.map(|list| {
            Value::Array(
                list.into_iter()
                    .map(|a| {
                        let mut m = Map::new();
                        for (k, v) in [
                            ("line1", a.line1),
                            ("line2", a.line2),
                            ("postalCode", a.postal_code),
                            ("city", a.city),
                            ("region", a.region),
                            ("country", a.country),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.to_owned(), Value::String(v));
                            }
                        }
                        Value::Object(m)
                    })
                    .collect(),
            )
        }),
    );
    put("locale", core.locale.map(Value::String));
    put("country", core.country.map(Value::String));
    put("birthDate", core.birth_date.map(Value::String));
    put("company", core.company.map(Value::String));
    map
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    Created,
    /// The record's identities or traits changed, or it was observed at a different (given) `observedAt`.
    Updated,
    /// The same identities and traits again, without `observedAt` or with the stored one: nothing changed.
    Unchanged,
    Rejected,
    Suppressed,
}

#[derive(SimpleObject)]
pub struct RecordResult {
    index: i32,
    status: RecordStatus,
    record_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    error: Option<super::touchpoints::ItemError>,
}

#[derive(SimpleObject, Default)]
pub struct IngestCustomerRecordsPayload {
    results: Vec<RecordResult>,
    created: i32,
    updated: i32,
    unchanged: i32,
    rejected: i32,
    suppressed: i32,
}

/// A source record, with its identities and traits as received (masked without `pii:read`).
pub struct SourceRecordView {
    record: SourceRecord,
    disclosure: Disclosure,
}

#[Object(name = "SourceRecord")]
impl SourceRecordView {
    async fn id(&self) -> Uuid {
        self.record.id
    }
    /// The customer this record belongs to now.
    async fn customer_id(&self) -> Uuid {
        self.record.customer_id
    }
    async fn source(&self) -> &str {
        &self.record.source
    }
    async fn source_record_id(&self) -> &str {
        &self.record.source_record_id
    }
    async fn identities(&self) -> Json<Value> {
        Json(self.disclosure.json(&self.record.identities))
    }
    async fn traits(&self) -> Json<Value> {
        Json(self.disclosure.json(&self.record.traits))
    }
    async fn observed_at(&self) -> DateTime<Utc> {
        self.record.observed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.record.updated_at
    }
}

impl SourceRecordView {
    pub fn new(record: SourceRecord, disclosure: Disclosure) -> Self {
        SourceRecordView { record, disclosure }
    }
}

#[derive(Default)]
pub struct RecordsQuery;

#[Object]
impl RecordsQuery {
    /// Which customer a source record belongs to now, and what it said.
    async fn source_record(
        &self,
        ctx: &Context<'_>,
        source: String,
        source_record_id: String,
    ) -> async_graphql::Result<Option<SourceRecordView>> {
        let rc = request(ctx)?;
        let record = records::find(&rc.caller, &rc.services, &source, &source_record_id).await.gql()?;
        Ok(Some(SourceRecordView::new(record, Disclosure::for_caller(&rc.caller))))
    }

    /// How trait values survive when sources disagree, and the tenant's declared custom traits.
    async fn trait_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<TraitRulesView> {
        let rc = request(ctx)?;
        Ok(traits::read_rules(&rc.caller, &rc.services).await.gql()?.into())
    }
}

#[derive(SimpleObject, InputObject)]
#[graphql(name = "TraitRules", input_name = "TraitRulesInput")]
pub struct TraitRulesView {
    default_rule: SurvivorshipRule,
    rules: Vec<TraitRuleView>,
    custom: Vec<CustomTraitView>,
}

#[derive(SimpleObject, InputObject)]
#[graphql(name = "TraitRule", input_name = "TraitRuleInput")]
pub struct TraitRuleView {
    name: String,
    rule: SurvivorshipRule,
    /// For SOURCE_PRIORITY: sources from most to least trusted.
    sources: Vec<String>,
}

#[derive(SimpleObject, InputObject)]
#[graphql(name = "CustomTrait", input_name = "CustomTraitInput")]
pub struct CustomTraitView {
    name: String,
    #[graphql(name = "type")]
    kind: TraitType,
    /// Directly identifies the person: masked whole for callers without `pii:read`. Other custom traits are masked
    /// as free-form data (e-mail addresses and phone numbers in them).
    #[graphql(default)]
    personal: bool,
}

impl From<traits::TraitRules> for TraitRulesView {
    fn from(r: traits::TraitRules) -> Self {
        TraitRulesView {
            default_rule: r.default_rule,
            rules: r
                .rules
                .into_iter()
                .map(|t| TraitRuleView { name: t.name, rule: t.rule, sources: t.sources })
                .collect(),
            custom: r
                .custom
                .into_iter()
                .map(|c| CustomTraitView { name: c.name, kind: c.kind, personal: c.personal })
                .collect(),
        }
    }
}

impl From<TraitRulesView> for traits::TraitRules {
    fn from(r: TraitRulesView) -> Self {
        traits::TraitRules {
            default_rule: r.default_rule,
            rules: r.rules.into_iter().map(|t| TraitRule { name: t.name, rule: t.rule, sources: t.sources }).collect(),
            custom: r
                .custom
                .into_iter()
                .map(|c| CustomTrait { name: c.name, kind: c.kind, personal: c.personal })
                .collect(),
        }
    }
}

#[derive(Default)]
pub struct RecordsMutation;

#[Object]
impl RecordsMutation {
    /// Upserts up to 5,000 source records by (source, sourceRecordId); each is resolved into a customer (created,
    /// attached or merged by the resolution rules). Per-item results; the same record twice changes nothing and
    /// answers UNCHANGED (without `observedAt`, a re-sent identical record is a replay; see `observedAt`). The
    /// customer's `givenName` / `familyName` are the winning trait values after every write. Needs `profiles:write`.
    async fn ingest_customer_records(
        &self,
        ctx: &Context<'_>,
        records: Vec<CustomerRecordInput>,
    ) -> async_graphql::Result<IngestCustomerRecordsPayload> {
        let rc = request(ctx)?;
        let items = records
            .into_iter()
            .map(|r| DomainRecordInput {
                source: r.source,
                source_record_id: r.source_record_id,
                identities: r.identities.unwrap_or_default().into_iter().map(Into::into).collect(),
                traits: traits_map(r.traits.unwrap_or_default(), r.custom_traits.map(|j| j.0)),
                observed_at: r.observed_at,
            })
            .collect();
        let outcomes = records::ingest_customer_records(&rc.caller, &rc.services, items).await.gql()?;
        let mut payload = IngestCustomerRecordsPayload::default();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let (status, ids, error) = match outcome {
                RecordOutcome::Created { record_id, customer_id } => {
                    payload.created += 1;
                    (RecordStatus::Created, Some((record_id, customer_id)), None)
                }
                RecordOutcome::Updated { record_id, customer_id } => {
                    payload.updated += 1;
                    (RecordStatus::Updated, Some((record_id, customer_id)), None)
                }
                RecordOutcome::Unchanged { record_id, customer_id } => {
                    payload.unchanged += 1;
                    (RecordStatus::Unchanged, Some((record_id, customer_id)), None)
                }
                RecordOutcome::Rejected(err) => {
                    payload.rejected += 1;
                    (RecordStatus::Rejected, None, Some(super::touchpoints::item_error(&err)))
                }
                RecordOutcome::Suppressed => {
                    payload.suppressed += 1;
                    (RecordStatus::Suppressed, None, None)
                }
            };
            payload.results.push(RecordResult {
                index,
                status,
                record_id: ids.map(|(r, _)| r),
                customer_id: ids.map(|(_, c)| c),
                error,
            });
        }
        Ok(payload)
    }

    /// Replaces the tenant's trait rules (survivorship per trait, declared custom traits); customers' `givenName` /
    /// `familyName` follow the new winners in the same transaction. Needs `profiles:write`.
    async fn update_trait_rules(
        &self,
        ctx: &Context<'_>,
        rules: TraitRulesView,
    ) -> async_graphql::Result<TraitRulesView> {
        let rc = request(ctx)?;
        Ok(traits::update_rules(&rc.caller, &rc.services, rules.into()).await.gql()?.into())
    }
}

/// The winning traits of a customer. Without `pii:read`, personal traits are masked whole and the others as
/// free-form data (`Disclosure::trait_value`).
pub struct CustomerTraitsView {
    pub values: std::collections::BTreeMap<String, traits::TraitValue>,
    pub disclosure: Disclosure,
}

impl CustomerTraitsView {
    fn get(&self, name: &str) -> Option<Value> {
        let value = self.values.get(name)?;
        Some(self.disclosure.trait_value(value.personal, &value.value))
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.as_str().map(str::to_owned))
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .and_then(|v| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()))
            .unwrap_or_default()
    }
}

#[Object(name = "CustomerTraits")]
impl CustomerTraitsView {
    async fn given_name(&self) -> Option<String> {
        self.text("givenName")
    }
    async fn family_name(&self) -> Option<String> {
        self.text("familyName")
    }
    async fn emails(&self) -> Vec<String> {
        self.list("emails")
    }
    async fn phones(&self) -> Vec<String> {
        self.list("phones")
    }
    async fn addresses(&self) -> Option<Json<Value>> {
        self.get("addresses").map(Json)
    }
    async fn locale(&self) -> Option<String> {
        self.text("locale")
    }
    async fn country(&self) -> Option<String> {
        self.text("country")
    }
    /// YYYY-MM-DD.
    async fn birth_date(&self) -> Option<String> {
        self.text("birthDate")
    }
    async fn company(&self) -> Option<String> {
        self.text("company")
    }
    /// Declared custom traits by name.
    async fn custom(&self) -> Json<Map<String, Value>> {
        Json(
            self.values
                .iter()
                .filter(|(name, _)| !traits::CORE_TRAITS.iter().any(|(core, _)| core == name))
                .map(|(name, v)| (name.clone(), self.disclosure.trait_value(v.personal, &v.value)))
                .collect(),
        )
    }
}

/// One value a trait had, with its provenance.
#[derive(SimpleObject)]
#[graphql(name = "TraitValue")]
pub struct TraitValueView {
    pub name: String,
    pub value: Json<Value>,
    pub source: String,
    /// The source record (by Kontakt id) that carried the value.
    pub record_id: Uuid,
    pub observed_at: DateTime<Utc>,
}

impl TraitValueView {
    pub fn new(v: traits::TraitValue, disclosure: Disclosure) -> Self {
        let value = disclosure.trait_value(v.personal, &v.value);
        TraitValueView {
            name: v.name,
            value: Json(value),
            source: v.source,
            record_id: v.record_id,
            observed_at: v.observed_at,
        }
    }
}
