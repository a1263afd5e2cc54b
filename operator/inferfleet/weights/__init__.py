"""Model weights fetched once per node into a node-local cache (`inferfleet fetch-model`).

`sources` and `plan` are pure (what to fetch, where it goes, whether it fits); `cache` holds the
on-disk layout, the per-model lock and the atomic publish; `hub` and `s3` talk to the stores;
`fetch` runs one fetch from listing to publish.
"""
