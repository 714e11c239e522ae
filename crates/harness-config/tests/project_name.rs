//! `name:` is free text: it is kept for display, and the project identifier is
//! derived from it.

use harness_config::{LoadOptions, from_sources, project_name_from_title};

fn opts() -> LoadOptions {
    LoadOptions::default().with_env([("UNUSED", "")])
}

const SERVICES: &str = "services:\n  a:\n    binary: a\n";

#[test]
fn free_text_name_loads_and_derives_the_identifier() {
    let yaml = format!("version: \"1.0\"\nname: \"Environment Resolution Test\"\n{SERVICES}");
    let loaded = from_sources(&[("services.yaml", &yaml)], &opts()).expect("loads unchanged");
    let p = &loaded.project;
    assert_eq!(p.name.as_str(), "environment-resolution-test");
    assert_eq!(p.title.as_deref(), Some("Environment Resolution Test"));
    assert_eq!(p.display_name(), "Environment Resolution Test");
    assert!(
        loaded.summary().starts_with(
            "project environment-resolution-test (Environment Resolution Test): 1 service"
        ),
        "{}",
        loaded.summary()
    );
    // The title survives the resolved model (what the daemon persists).
    let again: harness_config::Project = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(again.name, p.name);
    assert_eq!(again.title, p.title);
}

#[test]
fn a_valid_identifier_maps_to_itself() {
    for name in ["shop", "MyShop", "a.b_c-d", "9lives"] {
        let yaml = format!("name: {name}\n{SERVICES}");
        let p = from_sources(&[("services.yaml", &yaml)], &opts())
            .unwrap()
            .project;
        assert_eq!(p.name.as_str(), name);
        assert_eq!(p.title, None, "{name}");
        assert_eq!(p.display_name(), name);
    }
}

#[test]
fn derivation_is_documented_and_stable() {
    let id = |t: &str| project_name_from_title(t).map(|n| n.to_string());
    let cases = [
        (
            "Environment Resolution Test",
            Some("environment-resolution-test"),
        ),
        ("  Shop  ", Some("shop")),
        ("Shop / API: v2!", Some("shop-api-v2")),
        ("__internal__", Some("internal")),
        ("Café Olé", Some("caf-ol")),
        ("a -- b", Some("a---b")),
        ("x.y z", Some("x.y-z")),
        ("!!!", None),
        ("   ", None),
        ("", None),
        ("Ωμέγα", None),
    ];
    for (text, want) in cases {
        assert_eq!(id(text).as_deref(), want, "for {text:?}");
        // Deriving twice gives the same identifier.
        if let Some(w) = want {
            assert_eq!(id(w).as_deref(), Some(w));
        }
    }
    // Long names are cut to 63 characters, without a trailing separator.
    let long = format!("{} x", "Word ".repeat(20));
    let derived = id(&long).unwrap();
    assert!(derived.len() <= 63, "{derived}");
    assert!(
        derived.ends_with(|c: char| c.is_ascii_alphanumeric()),
        "{derived}"
    );
    assert!(derived.starts_with("word-word-"), "{derived}");
}

#[test]
fn a_name_without_letters_or_digits_is_a_located_error() {
    let yaml = format!("# project\nname: \"*** ***\"\n{SERVICES}");
    let e = from_sources(&[("services.yaml", &yaml)], &opts()).unwrap_err();
    let errors: Vec<_> = e.errors().collect();
    assert_eq!(errors.len(), 1, "{e}");
    let loc = errors[0].location.as_ref().expect("located");
    assert_eq!((loc.line, loc.column), (2, 7));
    assert_eq!(
        errors[0].message,
        "project name `*** ***` has no letters or digits to make an identifier from"
    );
}

#[test]
fn the_project_option_still_takes_an_identifier() {
    let yaml = format!("name: \"Free Text\"\n{SERVICES}");
    let o = LoadOptions {
        project_name: Some("chosen".into()),
        ..opts()
    };
    let p = from_sources(&[("services.yaml", &yaml)], &o)
        .unwrap()
        .project;
    assert_eq!(p.name.as_str(), "chosen");
    let o = LoadOptions {
        project_name: Some("not valid".into()),
        ..opts()
    };
    assert!(from_sources(&[("services.yaml", &yaml)], &o).is_err());
}

#[test]
fn built_images_are_tagged_with_the_identifier() {
    let yaml = "name: \"My Shop\"\nservices:\n  web:\n    type: docker\n    build: .\n";
    let p = from_sources(&[("services.yaml", yaml)], &opts())
        .unwrap()
        .project;
    let harness_config::Target::Docker(d) = &p.services["web"].target else {
        panic!("a docker service");
    };
    assert_eq!(d.image, "harness-my-shop-web:latest");
}
