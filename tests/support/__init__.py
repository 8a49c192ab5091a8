"""What the tests and the benchmarks share: throwaway repositories, servers on loopback, tiny digits."""
