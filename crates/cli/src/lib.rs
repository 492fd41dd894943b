//! `halterctl`: arrives with the cluster issue (a gRPC client needs a server to talk to).
