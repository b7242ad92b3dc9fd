"""settings-cdn publisher: the control plane that validates, compiles and publishes bundles."""
