"""The gateway: per-function URLs over replicas on a platform (local processes, Docker, Kubernetes).

platform.py   the contract with deploy targets (Platform, FunctionDeployment, Scaling, Replica)
targets.py    platform_for(target, settings): local, docker, k8s
(fnserve.local, fnserve.docker, fnserve.k8s: the targets themselves; local state in .fnserve/deploy/)
app.py        the ASGI app; proxy.py its hot path; upstream.py the HTTP/1.1 client to replicas
balancer.py   least outstanding requests, retry rules     split.py     weighted, sticky versions
autoscaler.py the KPA decision                            activator.py scale from zero, held requests
service.py    the control loop                            admin.py     the token-protected admin API
deployments.py deploy/scale/split/promote/rollback as pure functions; control.py the CLI's way in
schedule.py   [train] schedule, checked once for CronJobs and the gateway; scheduler.py runs it (local,
              docker), runs.py keeps its runs and metrics
rollout.py    [rollout]: stages, gates, a rollout's state; release.py decides each stage (analysis.py
              judges the window), shadow.py copies requests to the candidate
"""
