"""Stand-ins for agent CLIs that cannot be installed offline (see build.py)."""
