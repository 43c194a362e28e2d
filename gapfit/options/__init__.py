"""gap_fit's options: the key=value syntax, the typed option tables (top level and per GAP)
and the machinery that applies them (``schema``)."""
