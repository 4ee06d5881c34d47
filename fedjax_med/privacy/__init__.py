"""Differential privacy: record-level DP-SGD and client-level DP-FedAvg (see README "Privacy")."""
