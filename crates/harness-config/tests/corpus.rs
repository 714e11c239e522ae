//! Every example in `examples/` loads, validates, and matches the JSON Schema.

use std::path::{Path, PathBuf};

use harness_config::{LoadOptions, json_schema, load};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Each `X.yaml`, plus `X.yaml` + `X.override.yaml` for overrides.
fn example_sets() -> Vec<Vec<PathBuf>> {
    let mut sets = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix(".override.yaml") {
            sets.push(vec![p.with_file_name(format!("{base}.yaml")), p.clone()]);
        } else {
            sets.push(vec![p]);
        }
    }
    sets
}

fn no_env() -> LoadOptions {
    LoadOptions::default().with_env(Vec::<(String, String)>::new())
}

#[test]
fn every_example_loads() {
    let sets = example_sets();
    assert!(
        sets.len() >= 5,
        "expected a corpus of examples, found {sets:?}"
    );
    for files in sets {
        let opts = LoadOptions {
            files: files.clone(),
            ..no_env()
        };
        match load(&opts) {
            Ok(loaded) => {
                assert!(!loaded.project.services.is_empty(), "{files:?}");
                assert_eq!(
                    loaded.project.graph().start_order().len(),
                    loaded.project.services.len()
                );
            }
            Err(d) => panic!("{files:?} does not load:\n{d}"),
        }
    }
}

#[test]
fn every_example_matches_the_schema() {
    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).expect("the generated schema compiles");
    for files in example_sets() {
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{} does not match the schema: {errors:#?}",
                f.display()
            );
        }
    }
}

#[test]
fn schema_rejects_unknown_keys_and_wrong_types() {
    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bad =
        serde_json::json!({"services": {"a": {"type": "process", "binary": "x", "bogus": 1}}});
    assert!(!validator.is_valid(&bad));
    let bad =
        serde_json::json!({"services": {"a": {"type": "process", "binary": "x", "ports": [true]}}});
    assert!(!validator.is_valid(&bad));
    let good = serde_json::json!({"x-anything": {"y": 1}, "services": {"a": {"type": "process", "binary": "x"}}});
    assert!(
        validator.is_valid(&good),
        "{:?}",
        validator
            .iter_errors(&good)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn schema_describes_probe_start_interval() {
    let schema = json_schema();
    let probe = &schema["$defs"]["RawProbe"]["properties"]["start_interval"];
    let text = probe.to_string();
    assert!(text.contains("until the check first passes"), "{text}");
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (value, ok) in [
        (serde_json::json!("250ms"), true),
        (serde_json::json!(2), true),
        (serde_json::json!([1]), false),
    ] {
        let doc = serde_json::json!({"services": {"a": {"type": "process", "binary": "x",
            "readiness": {"tcp": 1, "start_interval": value}}}});
        assert_eq!(validator.is_valid(&doc), ok, "{value}");
    }
}
