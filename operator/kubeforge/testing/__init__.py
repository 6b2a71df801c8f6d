"""Real servers and data for tests and benchmarks (SeaweedFS S3, tritonserver, synthetic data).

Shipped in the package so that benchmarks and users' own tests can start the same servers.
"""
