"""sdpack's own Relax rewrites, each a module pass named for what it does (pipeline v2 on)."""
