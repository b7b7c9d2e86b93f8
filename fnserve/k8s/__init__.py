"""Kubernetes objects as plain data (dicts in the API's own shape), computed by pure functions.

Applying them is the job of the one module that talks to the Kubernetes API.

    names, spec       object names and labels; the parameter bundles (FunctionSpec, K8sSettings)
    workload          a version's Deployment (probes, resources, drain, security)
    manifests         every object of a function: Services, HPA, PDB, state ConfigMap, CronJob
    gateway           the gateway's Deployment, Service and RBAC
    jobs              training Jobs and CronJobs
    project           the above from a project's files, and YAML for `fn deploy --dry-run`
    api               the one module that talks to the Kubernetes API (the official client)
    endpoints         replicas from EndpointSlices, kept current by a watch
    platform          the `k8s` target of the gateway (fnserve.gateway.platform.Platform)

Only ``api``, ``endpoints`` and ``platform`` need the ``kubernetes`` package (``fnserve[deploy]``).
"""
