"""Models on disk: artifacts, packaging, reference profiles, the registry, rollout and automatic rollback."""
