"""The `memft` command line: parses options, calls memft.api, prints tables or JSON. No math lives here."""
