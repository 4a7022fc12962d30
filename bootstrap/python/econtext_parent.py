# econtext.parent: what only a context that creates children needs
# (SPAWN). Served by the master through GET_MODULE on first use.
# Placeholder until the implementation lands.
