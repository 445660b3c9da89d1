"""The harnesses behind `make chaos` and `make bench` (fronts: `scripts/`); no tests here.

`chaos` (with `changing_primary`, `replica_reader`): SIGKILL syncs and check every file.
`bench` (with `bench_report`, `relay`, `upstream_client`): measure against the real upstream;
`fleet` (with `site_cache`, real nginx; also used by tests/fleet): many hosts, one PRIMARY.
"""
