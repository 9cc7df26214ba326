//! JSON Schemas of agent outputs: compiling, validating, spotting schemas that can never be
//! satisfied, and generating a valid instance (used by the simulated provider).

use serde_json::{Map, Value, json};

/// A compiled output schema.
pub struct OutputSchema {
    source: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSchema")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// How many validation errors one message lists.
const MAX_REPORTED_ERRORS: usize = 5;

impl OutputSchema {
    /// Parses and compiles a schema given as JSON text. The root must be an object schema, and
    /// the schema must be satisfiable by at least the obvious checks.
    pub fn compile(text: &str) -> Result<Self, String> {
        let source: Value = serde_json::from_str(text)
            .map_err(|error| format!("the schema is not valid JSON: {error}"))?;
        Self::from_value(source)
    }

    /// Compiles an already parsed schema.
    pub fn from_value(source: Value) -> Result<Self, String> {
        match source.get("type") {
            Some(Value::String(kind)) if kind == "object" => {}
            _ => {
                return Err(
                    "the schema's root must be an object schema ({\"type\": \"object\", ...}); wrap other values in a property"
                        .to_string(),
                );
            }
        }
        let validator = jsonschema::validator_for(&source)
            .map_err(|error| format!("the schema is invalid: {error}"))?;
        if let Some(reason) = unsatisfiable_reason(&source, "#") {
            return Err(format!("the schema can never be satisfied: {reason}"));
        }
        Ok(OutputSchema { source, validator })
    }

    /// The schema as JSON.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Checks an instance; the error lists the first few violations with their paths.
    pub fn validate(&self, instance: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(instance)
            .take(MAX_REPORTED_ERRORS)
            .map(|error| {
                let path = error.instance_path().as_str().to_string();
                let path = if path.is_empty() {
                    "(root)".to_string()
                } else {
                    path
                };
                format!("at {path}: {error}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Looks for the contradictions an LLM-written schema most often contains. Returns the first one
/// found, naming where it is. Not a decision procedure: a schema this accepts may still be
/// unsatisfiable in subtler ways, which then surfaces as a schema mismatch.
pub fn unsatisfiable_reason(schema: &Value, at: &str) -> Option<String> {
    let object = match schema {
        Value::Bool(false) => return Some(format!("{at} is `false`, which no value matches")),
        Value::Object(object) => object,
        _ => return None,
    };
    if let Some(Value::Array(values)) = object.get("enum")
        && values.is_empty()
    {
        return Some(format!("{at} has an empty `enum`"));
    }
    if let Some(Value::Object(not)) = object.get("not")
        && not.is_empty()
    {
        return Some(format!("{at} has `not: {{}}`, which rejects every value"));
    }
    if let Some(Value::Array(types)) = object.get("type")
        && types.is_empty()
    {
        return Some(format!("{at} has an empty `type` list"));
    }
    for (low, high) in [
        ("minimum", "maximum"),
        ("minLength", "maxLength"),
        ("minItems", "maxItems"),
        ("minProperties", "maxProperties"),
    ] {
        if let (Some(lo), Some(hi)) = (
            object.get(low).and_then(Value::as_f64),
            object.get(high).and_then(Value::as_f64),
        ) && lo > hi
        {
            return Some(format!("{at} has {low} {lo} greater than {high} {hi}"));
        }
    }
    let properties = object.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = object.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => {
                    if let Some(reason) =
                        unsatisfiable_reason(property, &format!("{at}/properties/{name}"))
                    {
                        return Some(format!(
                            "required property '{name}' can never be satisfied: {reason}"
                        ));
                    }
                }
                None if object.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Some(format!(
                        "{at} requires '{name}' but forbids it (it is not in `properties` and `additionalProperties` is false)"
                    ));
                }
                None => {}
            }
        }
    }
    if let Some(items) = object.get("items")
        && object.get("minItems").and_then(Value::as_u64).unwrap_or(0) > 0
        && let Some(reason) = unsatisfiable_reason(items, &format!("{at}/items"))
    {
        return Some(reason);
    }
    None
}

/// Generates a deterministic instance of `schema`; `seed` varies strings and numbers.
///
/// Covers the JSON Schema subset agents' output schemas use: types, properties/required, items
/// with min/max items, enum/const, numeric and length bounds, anyOf/oneOf/allOf (first branch),
/// and local `$ref`s.
///
/// The instance is bounded: at most `max_bytes` of JSON (about what `max_tokens` of output can
/// hold), nested at most [`MAX_INSTANCE_DEPTH`] deep. A schema that cannot be satisfied within
/// that (`minLength: 1e7`, `minItems: 1e8`) is an error naming what it asked for, found before
/// anything large is built.
pub fn example_instance(schema: &Value, seed: u64, max_bytes: usize) -> Result<Value, String> {
    let mut generator = Generator {
        root: schema,
        seed,
        depth: 0,
        left: max_bytes,
        max_bytes,
        failed: None,
    };
    let value = generator.instance(schema, "value");
    match generator.failed {
        Some(reason) => Err(reason),
        None => Ok(value),
    }
}

/// Deepest nesting of a generated instance; a recursive schema stops recursing (empty arrays,
/// optional properties left out) long before.
pub const MAX_INSTANCE_DEPTH: usize = 64;

/// Past this depth, arrays get their fewest items, so that recursive schemas end.
const SHALLOW_DEPTH: usize = 8;

struct Generator<'a> {
    root: &'a Value,
    seed: u64,
    depth: usize,
    /// JSON bytes the instance may still take.
    left: usize,
    max_bytes: usize,
    /// Why the schema cannot be satisfied within the bounds.
    failed: Option<String>,
}

impl<'a> Generator<'a> {
    fn next(&mut self) -> u64 {
        // SplitMix64: tiny, deterministic, good enough to vary example values.
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Takes `bytes` of the instance's room; false (and the reason kept) when it does not fit.
    fn spend(&mut self, bytes: usize, what: impl FnOnce() -> String) -> bool {
        if self.failed.is_some() {
            return false;
        }
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                true
            }
            None => {
                self.failed = Some(format!(
                    "the schema asks for {}, more than an answer of {} bytes can hold (lower the \
                     schema's minimums, or raise maxTokens)",
                    what(),
                    self.max_bytes
                ));
                false
            }
        }
    }

    fn resolve<'s>(&self, schema: &'s Value) -> &'s Value
    where
        'a: 's,
    {
        let mut current = schema;
        for _ in 0..32 {
            let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let Some(pointer) = reference.strip_prefix('#') else {
                break;
            };
            match self.root.pointer(pointer) {
                Some(target) => current = target,
                None => break,
            }
        }
        current
    }

    fn instance(&mut self, schema: &Value, name: &str) -> Value {
        let schema = self.resolve(schema);
        if self.failed.is_some() {
            return Value::Null;
        }
        if self.depth > MAX_INSTANCE_DEPTH {
            self.failed = Some(format!(
                "the schema nests deeper than {MAX_INSTANCE_DEPTH} levels (or recurses without \
                 an end), which the simulated provider does not generate"
            ));
            return Value::Null;
        }
        let Value::Object(object) = schema else {
            return Value::Null;
        };
        if let Some(constant) = object.get("const") {
            self.spend(json_size(constant), || "a constant".into());
            return constant.clone();
        }
        if let Some(Value::Array(values)) = object.get("enum")
            && !values.is_empty()
        {
            let index = (self.next() % values.len() as u64) as usize;
            self.spend(json_size(&values[index]), || "an enum value".into());
            return values[index].clone();
        }
        for combinator in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = object.get(combinator)
                && let Some(first) = branches.first()
            {
                // A combinator is a level too, so that `{"anyOf": [{"$ref": "#"}]}` ends.
                self.depth += 1;
                let value = if combinator == "allOf" {
                    let merged = merge_all_of(object, branches);
                    self.instance(&merged, name)
                } else {
                    self.instance(first, name)
                };
                self.depth -= 1;
                return value;
            }
        }
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(Value::Array(kinds)) => kinds
                .iter()
                .filter_map(Value::as_str)
                .find(|k| *k != "null")
                .unwrap_or("null"),
            None if object.contains_key("properties") => "object",
            None if object.contains_key("items") => "array",
            None => "string",
            Some(_) => "null",
        };
        // Brackets, quotes, a comma: what every value costs at least.
        if !self.spend(4, || "more values".into()) {
            return Value::Null;
        }
        self.depth += 1;
        let value = match kind {
            "object" => self.object(object),
            "array" => self.array(object, name),
            "integer" => self.number(object, true),
            "number" => self.number(object, false),
            "boolean" => Value::Bool(self.next().is_multiple_of(2)),
            "string" => self.string(object, name),
            _ => Value::Null,
        };
        self.depth -= 1;
        value
    }

    fn object(&mut self, object: &Map<String, Value>) -> Value {
        let mut out = Map::new();
        if let Some(Value::Object(properties)) = object.get("properties") {
            let required: Vec<&str> = match object.get("required") {
                Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for (key, property) in properties {
                // Deep in a recursive schema, optional properties are left out so that it ends.
                if self.depth > SHALLOW_DEPTH && !required.contains(&key.as_str()) {
                    continue;
                }
                if !self.spend(key.len() + 3, || "more properties".into()) {
                    break;
                }
                out.insert(key.clone(), self.instance(property, key));
            }
        }
        Value::Object(out)
    }

    fn array(&mut self, object: &Map<String, Value>, name: &str) -> Value {
        let min = object.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = object
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(min.max(2));
        let count = if self.depth > SHALLOW_DEPTH {
            min
        } else {
            (1 + self.next() % 2).clamp(min, max.max(min))
        };
        // Every item takes at least a byte and a comma: refuse before generating any of them.
        let fits = usize::try_from(count)
            .ok()
            .and_then(|count| count.checked_mul(2))
            .is_some_and(|bytes| bytes <= self.left);
        if !fits {
            self.spend(usize::MAX, || format!("an array of at least {min} items"));
            return Value::Null;
        }
        let items = object.get("items").cloned().unwrap_or(json!({}));
        let unique = object.get("uniqueItems") == Some(&Value::Bool(true));
        let mut out: Vec<Value> = Vec::new();
        let mut attempts = 0;
        while (out.len() as u64) < count && attempts < count * 8 && self.failed.is_none() {
            attempts += 1;
            let item = self.instance(&items, name);
            if !unique || !out.contains(&item) {
                out.push(item);
            }
        }
        Value::Array(out)
    }

    fn number(&mut self, object: &Map<String, Value>, integer: bool) -> Value {
        let mut low = object.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
        let mut high = object
            .get("maximum")
            .and_then(Value::as_f64)
            .unwrap_or(low + 10.0);
        if let Some(exclusive) = object.get("exclusiveMinimum").and_then(Value::as_f64) {
            low = low.max(
                exclusive
                    + if integer {
                        1.0
                    } else {
                        f64::EPSILON * exclusive.abs().max(1.0)
                    },
            );
        }
        if let Some(exclusive) = object.get("exclusiveMaximum").and_then(Value::as_f64) {
            high = high.min(
                exclusive
                    - if integer {
                        1.0
                    } else {
                        f64::EPSILON * exclusive.abs().max(1.0)
                    },
            );
        }
        self.spend(24, || "a number".into());
        if integer {
            // In i128, so that bounds near the ends of i64 (or past them: `as` saturates) never
            // overflow.
            let (low, high) = (
                i128::from(low.ceil() as i64),
                i128::from(high.floor() as i64),
            );
            let span = u128::try_from((high - low).max(0)).unwrap_or(0) + 1;
            let offset = i128::try_from(u128::from(self.next()) % span).unwrap_or(0);
            json!(i64::try_from(low + offset).unwrap_or(i64::MAX))
        } else {
            let fraction = (self.next() % 1000) as f64 / 1000.0;
            json!(low + (high - low).max(0.0) * fraction)
        }
    }

    fn string(&mut self, object: &Map<String, Value>, name: &str) -> Value {
        let min = object.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        let min = usize::try_from(min).unwrap_or(usize::MAX);
        if !self.spend(min, || format!("a string of at least {min} characters")) {
            return Value::Null;
        }
        let max = object
            .get("maxLength")
            .and_then(Value::as_u64)
            .map(|m| m as usize);
        let mut text = match object.get("format").and_then(Value::as_str) {
            Some("date-time") => "2026-01-01T00:00:00Z".to_string(),
            Some("date") => "2026-01-01".to_string(),
            Some("email") => "sim@example.com".to_string(),
            Some("uri") | Some("url") => "https://example.com/sim".to_string(),
            _ => format!("simulated {name} {}", self.next() % 1000),
        };
        let count = text.chars().count();
        text.extend(std::iter::repeat_n('x', min.saturating_sub(count)));
        if let Some(max) = max {
            text = text.chars().take(max).collect();
        }
        let extra = text.len().saturating_sub(min);
        self.spend(extra, || "a longer string".into());
        Value::String(text)
    }
}

/// Bytes of a value as compact JSON.
fn json_size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

fn merge_all_of(object: &Map<String, Value>, branches: &[Value]) -> Value {
    let mut merged = object.clone();
    merged.remove("allOf");
    for branch in branches {
        if let Value::Object(branch) = branch {
            for (key, value) in branch {
                match (merged.get_mut(key), value) {
                    (Some(Value::Object(existing)), Value::Object(extra)) => {
                        existing.extend(extra.clone());
                    }
                    (Some(Value::Array(existing)), Value::Array(extra)) => {
                        existing.extend(extra.iter().cloned());
                    }
                    _ => {
                        merged.insert(key.clone(), value.clone());
                    }
                }
            }
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "findings": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "minLength": 3},
                        "severity": {"enum": ["low", "medium", "high"]},
                        "line": {"type": "integer", "minimum": 1, "maximum": 500}
                    },
                    "required": ["title", "severity", "line"]
                }},
                "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "ok": {"type": "boolean"},
                "ref": {"$ref": "#/$defs/note"}
            },
            "required": ["findings", "score", "ok", "ref"],
            "$defs": {"note": {"type": "string", "maxLength": 5}}
        })
    }

    #[test]
    fn generated_instances_validate_for_many_seeds() {
        let schema = OutputSchema::from_value(findings_schema()).unwrap();
        for seed in 0..200 {
            let instance = example_instance(schema.source(), seed, 1 << 20).unwrap();
            schema
                .validate(&instance)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}: {instance}"));
        }
    }

    #[test]
    fn instances_are_deterministic() {
        assert_eq!(
            example_instance(&findings_schema(), 7, 1 << 20).unwrap(),
            example_instance(&findings_schema(), 7, 1 << 20).unwrap()
        );
    }

    #[test]
    fn validation_errors_name_the_path() {
        let schema = OutputSchema::from_value(findings_schema()).unwrap();
        let error = schema
            .validate(&json!({"findings": [{"title": "x"}], "score": 2, "ok": true, "ref": "n"}))
            .unwrap_err();
        assert!(error.contains("/findings/0"), "{error}");
        assert!(error.contains("/score"), "{error}");
    }

    #[test]
    fn non_object_roots_are_refused() {
        let error = OutputSchema::compile(r#"{"type": "array"}"#).unwrap_err();
        assert!(error.contains("root must be an object schema"), "{error}");
        assert!(
            OutputSchema::compile("{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn extreme_integer_bounds_never_overflow() {
        for (low, high) in [
            (-1e19, 1e19),
            (-9.3e18, 9.3e18),
            (1e19, 2e19),
            (-2e19, -1e19),
            (0.0, 1e300),
        ] {
            let schema = json!({"type": "object", "properties": {
                "n": {"type": "integer", "minimum": low, "maximum": high}
            }, "required": ["n"]});
            for seed in 0..20 {
                let value = example_instance(&schema, seed, 1 << 10).unwrap();
                assert!(value["n"].is_i64(), "{low} {high}: {value}");
            }
        }
    }

    #[test]
    fn huge_minimums_fail_at_once_instead_of_building() {
        for (schema, asks) in [
            (
                json!({"type": "object", "properties": {"s": {"type": "string", "minLength": 1e7 as u64}}}),
                "a string of at least 10000000 characters",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "minItems": 1e8 as u64}}}),
                "an array of at least 100000000 items",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "minItems": u64::MAX}}}),
                "an array of at least 18446744073709551615 items",
            ),
        ] {
            let began = std::time::Instant::now();
            let error = example_instance(&schema, 1, 32 << 10).unwrap_err();
            assert!(error.contains(asks), "{error}");
            assert!(error.contains("raise maxTokens"), "{error}");
            assert!(began.elapsed() < std::time::Duration::from_secs(5));
        }
        // Within the room, a long minimum is met exactly and cheaply.
        let schema = json!({"type": "object", "properties": {"s": {"type": "string", "minLength": 20000}}, "required": ["s"]});
        let value = example_instance(&schema, 1, 32 << 10).unwrap();
        assert_eq!(value["s"].as_str().unwrap().len(), 20000);
    }

    #[test]
    fn self_referencing_combinators_end() {
        // Found by the property test below: these recursed until the stack overflowed.
        for schema in [
            json!({"anyOf": [{"$ref": "#"}]}),
            json!({"allOf": [{"$ref": "#"}]}),
            json!({"oneOf": [{"anyOf": [{"$ref": "#"}]}]}),
        ] {
            let error = example_instance(&schema, 1, 1 << 20).unwrap_err();
            assert!(error.contains("nests deeper than"), "{error}");
        }
    }

    #[test]
    fn deep_schemas_are_satisfied_and_recursive_ones_end() {
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"type": "object", "properties": {"x": deep}, "required": ["x"]});
        }
        let schema = OutputSchema::from_value(deep.clone()).unwrap();
        let value = example_instance(&deep, 3, 1 << 20).unwrap();
        schema.validate(&value).unwrap();
        // A tree: children refer back to the root.
        let tree = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}}
        }, "required": ["name"]});
        let schema = OutputSchema::from_value(tree.clone()).unwrap();
        for seed in 0..20 {
            let value = example_instance(&tree, seed, 1 << 20).unwrap();
            schema.validate(&value).unwrap();
        }
        // Too deep to generate is an error, not a false mismatch.
        let mut deeper = json!({"type": "string"});
        for _ in 0..(MAX_INSTANCE_DEPTH + 2) {
            deeper = json!({"type": "object", "properties": {"x": deeper}, "required": ["x"]});
        }
        let error = example_instance(&deeper, 3, 1 << 20).unwrap_err();
        assert!(error.contains("nests deeper than"), "{error}");
    }

    /// Schema-like JSON: the keywords the simulator reads, with extreme numbers, nested.
    fn schema_like() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let number = prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(1e19)),
            Just(json!(-1e19)),
            Just(json!(u64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(1e300)),
            Just(json!(0.5)),
            (0u64..100_000_000).prop_map(|n| json!(n)),
        ];
        let leaf = (
            prop_oneof![
                Just("string"),
                Just("integer"),
                Just("number"),
                Just("boolean"),
                Just("null"),
                Just("array"),
                Just("object"),
            ],
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("minLength"),
                        Just("maxLength"),
                        Just("minItems"),
                        Just("maxItems"),
                        Just("minimum"),
                        Just("maximum"),
                        Just("exclusiveMinimum"),
                        Just("exclusiveMaximum"),
                    ],
                    number,
                ),
                0..4,
            ),
        )
            .prop_map(|(kind, bounds)| {
                let mut object = serde_json::Map::new();
                object.insert("type".into(), json!(kind));
                for (key, value) in bounds {
                    object.insert(key.into(), value);
                }
                Value::Object(object)
            });
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::btree_map("[a-z]{1,6}", inner.clone(), 0..5).prop_map(
                    |properties| {
                        let required: Vec<&String> = properties.keys().collect();
                        json!({"type": "object", "properties": properties, "required": required})
                    }
                ),
                (inner.clone(), 0u64..1_000_000).prop_map(
                    |(items, min)| json!({"type": "array", "items": items, "minItems": min})
                ),
                proptest::collection::vec(inner.clone(), 1..3).prop_map(|b| json!({"anyOf": b})),
                proptest::collection::vec(inner, 1..3).prop_map(|b| json!({"allOf": b})),
                Just(json!({"$ref": "#"})),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn the_simulator_never_panics_and_stays_bounded(schema in schema_like(), seed in 0u64..1000) {
            let max = 16 << 10;
            if let Ok(value) = example_instance(&schema, seed, max) {
                let bytes = value.to_string().len();
                proptest::prop_assert!(bytes <= 4 * max, "{bytes} bytes from {schema}");
            }
        }
    }

    #[test]
    fn unsatisfiable_schemas_are_refused_with_the_reason() {
        let cases = [
            (
                json!({"type": "object", "properties": {"a": false}, "required": ["a"]}),
                "is `false`",
            ),
            (
                json!({"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]}),
                "empty `enum`",
            ),
            (
                json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["n"]}),
                "minimum 5 greater than maximum 1",
            ),
            (
                json!({"type": "object", "required": ["a"], "additionalProperties": false}),
                "requires 'a' but forbids it",
            ),
            (json!({"type": "object", "not": {}}), "rejects every value"),
        ];
        for (schema, expected) in cases {
            let error = OutputSchema::from_value(schema.clone()).unwrap_err();
            assert!(
                error.contains("can never be satisfied") && error.contains(expected),
                "{schema}: {error}"
            );
        }
    }
}
