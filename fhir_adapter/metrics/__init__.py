"""CMS-0057-F prior-authorization metrics: the pure computation and its renderings."""
