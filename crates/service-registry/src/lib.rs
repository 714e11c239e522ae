//! What runs where: service entries, network topology, address resolution, IP allocation, persistence.
