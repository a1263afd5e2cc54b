"""bench/nodescale: a replica group that does not fit, from "does not fit" to Ready, with a node
autoscaler answering inferfleet's atomic ProvisioningRequests against one adding nodes for
placeholder pending pods per rank (LWS-style). See README.md."""
