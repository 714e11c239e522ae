//! Random and mutated YAML only ever gives Ok or an error, never a panic.

use std::path::Path;

use harness_config::{LoadOptions, from_sources};
use proptest::prelude::*;

fn opts() -> LoadOptions {
    LoadOptions::default().with_env([("SET", "1"), ("PORT", "8080")])
}

fn check(text: &str) {
    match from_sources(&[("services.yaml", text)], &opts()) {
        Ok(loaded) => {
            // A loaded project is usable: its graph covers every service and it renders.
            assert_eq!(
                loaded.project.graph().start_order().len(),
                loaded.project.services.len()
            );
            let _ = loaded.project.to_json();
        }
        Err(diags) => {
            assert!(diags.has_errors());
            let _ = diags.to_string();
            let _ = diags.render(true);
        }
    }
}

fn corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut texts: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml").then(|| std::fs::read_to_string(p).ok())?
        })
        .collect();
    texts.sort();
    texts
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, by: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let snippet = prop_oneof![
        Just(": ".to_owned()),
        Just("- ".to_owned()),
        Just("\n".to_owned()),
        Just("  ".to_owned()),
        Just("${".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("{".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("#".to_owned()),
        Just("~".to_owned()),
        Just("!!int ".to_owned()),
        Just("condition: healthy".to_owned()),
        Just("dependencies: [".to_owned()),
        Just("${x.ip}".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("-1".to_owned()),
        Just("1.5e400".to_owned()),
        "[ -~]{0,8}",
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), snippet).prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), 0usize..6).prop_map(|(line, by)| Mutation::Indent { line, by }),
    ]
}

fn floor_char(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match m {
        Mutation::Delete { at, len } => {
            let a = floor_char(text, *at);
            let b = floor_char(text, (a + len).min(text.len()));
            let b = b.max(a);
            format!("{}{}", &text[..a], &text[b..])
        }
        Mutation::Insert { at, text: ins } => {
            let a = floor_char(text, *at);
            format!("{}{}{}", &text[..a], ins, &text[a..])
        }
        Mutation::DuplicateLine { line } if !lines.is_empty() => {
            let i = line % lines.len();
            let l = lines[i].clone();
            lines.insert(i, l);
            lines.join("\n")
        }
        Mutation::SwapLines { a, b } if !lines.is_empty() => {
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
        Mutation::Indent { line, by } if !lines.is_empty() => {
            let n = lines.len();
            let l = &mut lines[line % n];
            *l = format!("{}{}", " ".repeat(*by), l.trim_start());
            lines.join("\n")
        }
        _ => text.to_owned(),
    }
}

/// A random tree in the shape of a services file, built from real keywords.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("services"),
        Just("networks"),
        Just("type"),
        Just("binary"),
        Just("image"),
        Just("ports"),
        Just("dependencies"),
        Just("condition"),
        Just("health_check"),
        Just("tcp"),
        Just("http"),
        Just("interval"),
        Just("restart"),
        Just("backoff"),
        Just("env"),
        Just("job"),
        Just("host"),
        Just("nodes"),
        Just("subnet"),
        Just("a"),
        Just("b"),
        Just("x-c"),
    ];
    let scalar = prop_oneof![
        Just("process".to_owned()),
        Just("docker".to_owned()),
        Just("lan".to_owned()),
        Just("healthy".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("\"8080:80\"".to_owned()),
        Just("${SET}".to_owned()),
        Just("${a.port}".to_owned()),
        Just("1.5s".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[a-z0-9 ]{0,6}".prop_map(|s| format!("\"{s}\"")),
    ];
    let leaf = scalar.prop_map(|s| s).boxed();
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "(?s).{0,300}") {
        check(&text);
    }

    #[test]
    fn mutated_examples_never_panic(
        which in any::<usize>(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let corpus = corpus();
        let mut text = corpus[which % corpus.len()].clone();
        for m in &muts {
            text = apply(&text, m);
        }
        check(&text);
    }

    #[test]
    fn random_service_trees_never_panic(tree in yamlish(), services in yamlish()) {
        check(&tree);
        check(&format!("services: {services}"));
        check(&format!("services: {{a: {tree}, b: {services}}}"));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [100, 1_000, 20_000] {
        let text = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(from_sources(&[("deep.yaml", &text)], &opts()).is_err());
        check(&format!("a: {}", "{b: ".repeat(depth) + &"}".repeat(depth)));
    }
}
