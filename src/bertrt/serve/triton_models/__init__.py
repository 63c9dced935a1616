"""Python-backend models copied into a ``bertrt triton-repo`` repository (run by Triton, not here)."""
