//! `harness graph`: the dependency graph as text, Graphviz dot, Mermaid or JSON.

use serde::Serialize;

/// One edge: `from` depends on `to`, under `condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// The dependent service.
    pub from: String,
    /// The dependency.
    pub to: String,
    /// The condition (`started`, `healthy`, `completed_successfully`, `log_ready /re/`).
    pub condition: String,
}

/// The graph as the renderers need it: services in start order and their edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphView {
    /// The project name.
    pub project: String,
    /// Every service, in an order in which each comes after what it depends on.
    pub start_order: Vec<String>,
    /// Every dependency edge.
    pub edges: Vec<Edge>,
}

impl GraphView {
    fn deps_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.from == service)
    }

    /// Services in start order, each with what it needs.
    pub fn to_text(&self) -> String {
        let width = self.start_order.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut out = String::new();
        for s in &self.start_order {
            let deps: Vec<String> = self
                .deps_of(s)
                .map(|e| format!("{} ({})", e.to, e.condition))
                .collect();
            if deps.is_empty() {
                out.push_str(s);
            } else {
                out.push_str(&format!("{s:<width$}  needs {}", deps.join(", ")));
            }
            out.push('\n');
        }
        out
    }

    /// Graphviz dot; an edge points from a service to what it depends on.
    pub fn to_dot(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = format!("digraph {} {{\n  rankdir=LR;\n", q(&self.project));
        for s in &self.start_order {
            out.push_str(&format!("  {};\n", q(s)));
        }
        for e in &self.edges {
            out.push_str(&format!(
                "  {} -> {} [label={}];\n",
                q(&e.from),
                q(&e.to),
                q(&e.condition)
            ));
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart; node ids are positional so any name is safe.
    pub fn to_mermaid(&self) -> String {
        let id = |s: &str| {
            self.start_order
                .iter()
                .position(|x| x == s)
                .map(|i| format!("s{i}"))
                .unwrap_or_else(|| "unknown".into())
        };
        let label = |s: &str| s.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        for s in &self.start_order {
            out.push_str(&format!("  {}[\"{}\"]\n", id(s), label(s)));
        }
        for e in &self.edges {
            out.push_str(&format!(
                "  {} -->|{}| {}\n",
                id(&e.from),
                label(&e.condition).replace('|', "#124;"),
                id(&e.to)
            ));
        }
        out
    }

    /// JSON: `{project, start_order, edges: [{from, to, condition}]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a GraphView always serializes") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> GraphView {
        let e = |f: &str, t: &str, c: &str| Edge {
            from: f.into(),
            to: t.into(),
            condition: c.into(),
        };
        GraphView {
            project: "demo".into(),
            start_order: vec!["migrate".into(), "api".into(), "worker".into()],
            edges: vec![
                e("api", "migrate", "completed_successfully"),
                e("worker", "api", "healthy"),
            ],
        }
    }

    #[test]
    fn text_lists_needs_in_start_order() {
        assert_eq!(
            demo().to_text(),
            "migrate\napi      needs migrate (completed_successfully)\nworker   needs api (healthy)\n"
        );
    }

    #[test]
    fn dot_has_every_edge() {
        let d = demo().to_dot();
        assert!(d.starts_with("digraph \"demo\" {"));
        assert!(d.contains("\"worker\" -> \"api\" [label=\"healthy\"];"));
    }

    #[test]
    fn mermaid_uses_safe_ids() {
        let m = demo().to_mermaid();
        assert!(m.starts_with("flowchart LR\n"));
        assert!(m.contains("s0[\"migrate\"]"));
        assert!(m.contains("s2 -->|healthy| s1"));
    }

    #[test]
    fn json_round_trips_the_fields() {
        let v: serde_json::Value = serde_json::from_str(&demo().to_json()).unwrap();
        assert_eq!(v["start_order"][0], "migrate");
        assert_eq!(v["edges"][1]["condition"], "healthy");
    }
}
