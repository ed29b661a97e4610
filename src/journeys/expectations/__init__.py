"""The shipped Great Expectations suites, one GX ExpectationSuite JSON file per suite (package data)."""
