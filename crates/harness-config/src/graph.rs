//! The dependency graph of a project's services (a petgraph DAG).
//!
//! Edges point from a dependency to its dependent, so the topological order is
//! the start order and its reverse the stop order.

use std::collections::{BTreeMap, HashMap};

use harness_core::ServiceName;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::model::{Condition, Dependency, ServiceSpec};

/// Why a set of services does not form a DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A service depends on a service that does not exist.
    #[error("service `{service}` depends on `{missing}`, which is not defined")]
    UnknownDependency {
        /// The dependent.
        service: ServiceName,
        /// The missing dependency.
        missing: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", format_cycle(.0))]
    Cycle(Vec<ServiceName>),
}

/// Renders a cycle as `a -> b -> c -> a`.
pub fn format_cycle(cycle: &[ServiceName]) -> String {
    let mut parts: Vec<&str> = cycle.iter().map(ServiceName::as_str).collect();
    if let Some(first) = cycle.first() {
        parts.push(first.as_str());
    }
    parts.join(" -> ")
}

/// The services and their dependencies, validated to be acyclic.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    graph: DiGraph<ServiceName, Condition>,
    index: HashMap<ServiceName, NodeIndex>,
    order: Vec<ServiceName>,
    deps: BTreeMap<ServiceName, Vec<Dependency>>,
}

impl DependencyGraph {
    /// Builds the graph; fails on unknown dependencies and cycles.
    pub fn build(services: &BTreeMap<ServiceName, ServiceSpec>) -> Result<Self, GraphError> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for name in services.keys() {
            index.insert(name.clone(), graph.add_node(name.clone()));
        }
        let mut deps = BTreeMap::new();
        for (name, spec) in services {
            for dep in &spec.dependencies {
                let Some(&from) = index.get(&dep.service) else {
                    return Err(GraphError::UnknownDependency {
                        service: name.clone(),
                        missing: dep.service.to_string(),
                    });
                };
                graph.add_edge(from, index[name], dep.condition.clone());
            }
            deps.insert(name.clone(), spec.dependencies.clone());
        }
        if let Some(cycle) = find_cycle(&graph) {
            return Err(GraphError::Cycle(cycle));
        }
        // Kahn's algorithm, taking ready services in name order so the order is stable.
        let mut indegree: BTreeMap<&ServiceName, usize> = services
            .keys()
            .map(|n| {
                (
                    n,
                    graph.edges_directed(index[n], petgraph::Incoming).count(),
                )
            })
            .collect();
        let mut ready: std::collections::BTreeSet<&ServiceName> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(services.len());
        while let Some(n) = ready.pop_first() {
            order.push(n.clone());
            for e in graph.edges_directed(index[n], petgraph::Outgoing) {
                let m = &graph[e.target()];
                let (key, _) = services
                    .get_key_value(m.as_str())
                    .expect("every graph node is a service of the map the graph was built from");
                let d = indegree
                    .get_mut(key)
                    .expect("every service has an indegree entry");
                *d -= 1;
                if *d == 0 {
                    ready.insert(key);
                }
            }
        }
        Ok(DependencyGraph {
            graph,
            index,
            order,
            deps,
        })
    }

    /// Services in start order: every service comes after all its dependencies
    /// (ties broken by name).
    pub fn start_order(&self) -> &[ServiceName] {
        &self.order
    }

    /// Services in stop order: dependents before their dependencies.
    pub fn stop_order(&self) -> Vec<ServiceName> {
        self.order.iter().rev().cloned().collect()
    }

    /// The direct dependencies of a service, with their conditions.
    pub fn dependencies(&self, service: &str) -> &[Dependency] {
        self.deps.get(service).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The services that depend directly on this one.
    pub fn dependents(&self, service: &str) -> Vec<&ServiceName> {
        let Some(&i) = self.index.get(service) else {
            return Vec::new();
        };
        let mut out: Vec<&ServiceName> = self
            .graph
            .edges_directed(i, petgraph::Outgoing)
            .map(|e| &self.graph[e.target()])
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// This service and everything it depends on, transitively, in start order.
    pub fn with_dependencies(&self, services: &[&str]) -> Vec<ServiceName> {
        self.closure(services, petgraph::Incoming)
    }

    /// This service and everything that depends on it, transitively, in stop order.
    pub fn with_dependents(&self, services: &[&str]) -> Vec<ServiceName> {
        let mut v = self.closure(services, petgraph::Outgoing);
        v.reverse();
        v
    }

    fn closure(&self, services: &[&str], dir: petgraph::Direction) -> Vec<ServiceName> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<NodeIndex> = services
            .iter()
            .filter_map(|s| self.index.get(*s).copied())
            .collect();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(self.graph.neighbors_directed(i, dir));
            }
        }
        self.order
            .iter()
            .filter(|n| seen.contains(&self.index[*n]))
            .cloned()
            .collect()
    }

    /// The underlying petgraph graph (edges: dependency -> dependent, weighted by condition).
    pub fn petgraph(&self) -> &DiGraph<ServiceName, Condition> {
        &self.graph
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True if there are no services.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Finds one cycle, as the services along it: each one depends on the next, and
/// the last on the first.
pub(crate) fn find_cycle(graph: &DiGraph<ServiceName, Condition>) -> Option<Vec<ServiceName>> {
    // Iterative DFS with colours over the "depends on" direction (Incoming edges).
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let n = graph.node_count();
    let mut colour = vec![Colour::White; n];
    let mut nodes: Vec<NodeIndex> = graph.node_indices().collect();
    nodes.sort_by(|a, b| graph[*a].cmp(&graph[*b]));
    for start in nodes {
        if colour[start.index()] != Colour::White {
            continue;
        }
        let mut path: Vec<NodeIndex> = vec![start];
        let mut iters: Vec<Vec<NodeIndex>> = vec![sorted_deps(graph, start)];
        colour[start.index()] = Colour::Grey;
        while let Some(it) = iters.last_mut() {
            if let Some(next) = it.pop() {
                match colour[next.index()] {
                    Colour::White => {
                        colour[next.index()] = Colour::Grey;
                        path.push(next);
                        iters.push(sorted_deps(graph, next));
                    }
                    Colour::Grey => {
                        let pos = path
                            .iter()
                            .position(|&p| p == next)
                            .expect("a grey node is on the current path");
                        return Some(path[pos..].iter().map(|&i| graph[i].clone()).collect());
                    }
                    Colour::Black => {}
                }
            } else {
                iters.pop();
                if let Some(done) = path.pop() {
                    colour[done.index()] = Colour::Black;
                }
            }
        }
    }
    None
}

/// The dependencies of a node, sorted so that popping yields them in name order.
fn sorted_deps(graph: &DiGraph<ServiceName, Condition>, i: NodeIndex) -> Vec<NodeIndex> {
    let mut v: Vec<NodeIndex> = graph.neighbors_directed(i, petgraph::Incoming).collect();
    v.sort_by(|a, b| graph[*b].cmp(&graph[*a]));
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> (ServiceName, ServiceSpec) {
        let n = ServiceName::new(name).unwrap();
        let mut s = ServiceSpec::process(n.clone(), "true", vec![]);
        s.dependencies = deps
            .iter()
            .map(|d| Dependency {
                service: ServiceName::new(*d).unwrap(),
                condition: Condition::Started,
            })
            .collect();
        (n, s)
    }

    #[test]
    fn orders_dependencies_first() {
        let services: BTreeMap<_, _> = [
            svc("web", &["api"]),
            svc("api", &["db", "cache"]),
            svc("db", &[]),
            svc("cache", &[]),
        ]
        .into_iter()
        .collect();
        let g = DependencyGraph::build(&services).unwrap();
        let order: Vec<&str> = g.start_order().iter().map(|s| s.as_str()).collect();
        assert_eq!(order, ["cache", "db", "api", "web"]);
        let stop: Vec<String> = g.stop_order().iter().map(|s| s.to_string()).collect();
        assert_eq!(stop, ["web", "api", "db", "cache"]);
        assert_eq!(g.dependencies("api").len(), 2);
        assert_eq!(g.dependents("db"), vec![&ServiceName::new("api").unwrap()]);
        let up: Vec<String> = g
            .with_dependencies(&["api"])
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(up, ["cache", "db", "api"]);
        let down: Vec<String> = g
            .with_dependents(&["db"])
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(down, ["web", "api", "db"]);
    }

    #[test]
    fn finds_cycles() {
        let services: BTreeMap<_, _> = [svc("a", &["b"]), svc("b", &["c"]), svc("c", &["a"])]
            .into_iter()
            .collect();
        let err = DependencyGraph::build(&services).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn unknown_dependency() {
        let services: BTreeMap<_, _> = [svc("a", &["nope"])].into_iter().collect();
        assert!(matches!(
            DependencyGraph::build(&services),
            Err(GraphError::UnknownDependency { .. })
        ));
    }
}
