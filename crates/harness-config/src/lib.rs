//! services.yaml: parse with exact locations, validate, interpolate, merge, schema, dependency graph.
