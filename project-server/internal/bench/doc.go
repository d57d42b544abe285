// Package bench holds the project server's benchmarks (`make bench`): work units
// dispatched and results accepted per second by simulated volunteers over real HTTP
// against one server on SQLite, with latency percentiles, next to a bare gorm + SQLite
// claim/complete loop; and aggregation throughput of tcnn3-sized float32 deltas with
// peak heap, next to a bare in-memory sum loop.
package bench
