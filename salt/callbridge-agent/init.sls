# callbridge agent beside Asterisk: venv + pinned package, enrollment (first run only), AMI
# user, systemd unit and service. See README.md.
include:
  - callbridge-agent.install
  - callbridge-agent.config
  - callbridge-agent.service
