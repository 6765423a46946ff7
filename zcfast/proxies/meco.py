"""(being written this session: see docs/proxies.md, "Modern proxies")."""
