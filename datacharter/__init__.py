"""The data charter: raw readings -> anonymised, aggregated open data (built by the data-charter issue)."""
