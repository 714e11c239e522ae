//! The JSON Schema of `services.yaml`, generated from the file types.

/// The JSON Schema (draft 2020-12) of `services.yaml`, for editors and checks.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(crate::raw::RawFile);
    let mut v = serde_json::to_value(&schema)
        .expect("a generated schema is plain JSON and always serializes");
    // Keys starting with `x-` are allowed anywhere; the top level says so for editors.
    if let Some(obj) = v.as_object_mut() {
        obj.insert("patternProperties".into(), serde_json::json!({ "^x-": {} }));
    }
    v
}

/// The JSON Schema, pretty-printed.
pub fn json_schema_string() -> String {
    serde_json::to_string_pretty(&json_schema()).expect("a JSON value always serializes")
}
