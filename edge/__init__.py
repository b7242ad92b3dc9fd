"""settings-cdn edge: the read-only data plane that serves settings bundles."""
