"""The `memft` command line: parses options, calls memft.api, prints tables or JSON. No math lives here.

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""
