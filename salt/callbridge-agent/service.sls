{%- from "callbridge-agent/map.jinja" import cba with context %}

include:
  - callbridge-agent.config

# The same unit `callbridge agent systemd-unit` prints (a test compares them).
callbridge-agent-unit:
  file.managed:
    - name: {{ cba.service.unit_dir }}/{{ cba.service.name }}.service
    - source: salt://callbridge-agent/files/callbridge-agent.service.jinja
    - template: jinja
    - context:
        cba: {{ cba | json }}
    - mode: "0644"
    - makedirs: true

# Enabled at boot in a state of its own: when a watched state changes, Salt runs only the
# restart of service.running, so an `enable` there would be left for the next run.
callbridge-agent-enabled:
{%- if cba.service.enable %}
  service.enabled:
{%- else %}
  service.disabled:
{%- endif %}
    - name: {{ cba.service.name }}
    - require:
      - file: callbridge-agent-unit

# Restarted when the package (an upgrade), its config or its unit changes. A restart loses
# no events: AMI events wait in the agent's outbox until the hub acknowledges them.
callbridge-agent-service:
  service.running:
    - name: {{ cba.service.name }}
    - require:
      - file: callbridge-agent-config
      - service: callbridge-agent-enabled
    - watch:
      - pip: callbridge-agent-package
      - callbridge-agent-enroll
      - file: callbridge-agent-config
{%- for key in ("host", "port", "username", "secret") %}
      - file: callbridge-agent-config-ami-{{ key }}
{%- endfor %}
      - file: callbridge-agent-unit
