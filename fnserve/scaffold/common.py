"""What every ``fn new`` template writes alike."""

FUNCTION_TOML = """\
# Settings of the {{ name }} function; the project's are in fn.toml.

[build]
template = "{{ template }}"  # fn build: the image's Dockerfile is templates/{{ template }}/Dockerfile

# fn deploy --target k8s; the defaults are shown.
# [resources]
# cpu = "500m"             # CPU request
# memory = "1Gi"           # memory request and limit
# [train]
# schedule = "0 3 * * *"   # retrain nightly as a Kubernetes CronJob
"""
