//! Bring a service graph up on real health and keep it up: ServiceManager, executors, lifecycle reducer.
