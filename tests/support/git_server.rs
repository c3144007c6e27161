//! Loopback smart-HTTP git server (git http-backend) for authenticated-transport tests.
