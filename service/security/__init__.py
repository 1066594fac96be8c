"""Who may call what: API keys with scopes. No Flask."""
