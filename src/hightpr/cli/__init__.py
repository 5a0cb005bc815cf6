"""Console commands: each parses its arguments, calls the library (`hightpr.training`, `hightpr.tables`,
...) and reports; nothing outside this package imports it."""
