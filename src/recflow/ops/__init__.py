"""Operations tooling: build-context checks and the compose smoke run (no engine needed to import)."""
