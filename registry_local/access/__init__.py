"""Who may read what: access decided per client and repository."""
