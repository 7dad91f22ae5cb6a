{%- from "callbridge-agent/map.jinja" import cba with context %}

include:
  - callbridge-agent.install

callbridge-agent-dirs:
  file.directory:
    - names:
      - {{ cba.config_dir }}
      - {{ cba.state_dir }}
    - user: {{ cba.user }}
    - group: {{ cba.group }}
    - mode: "0700"
    - makedirs: true
{%- if cba.manage_user %}
    - require:
      - user: callbridge-agent-user
{%- endif %}

# Enrollment, on the first run only (`creates`): the single-use code is exchanged for the
# agent's own token, which goes straight into the config file (0600, the agent's user). The
# code and the AMI secret travel in the environment, not on the command line.
{%- if not cba.enroll_code and not salt["file.file_exists"](cba.config) %}
callbridge-agent-enroll:
  test.fail_without_changes:
    - name: >-
        {{ cba.config }} does not exist yet: set pillar callbridge_agent:enroll_code to a code
        from `callbridge pbx enroll NAME` on the hub (and callbridge_agent:hub to its address)
{%- else %}
callbridge-agent-enroll:
  cmd.run:
    - name: >-
        {{ cba.venv }}/bin/callbridge agent enroll --hub {{ cba.hub }} --config {{ cba.config }}
        --outbox {{ cba.state_dir }}/outbox.sqlite3 --ami-host {{ cba.ami.host }}
        --ami-port {{ cba.ami.port }} --ami-username {{ cba.ami.username }}
        --recordings-dir {{ cba.recordings_dir }}
    - env:
        CALLBRIDGE_AGENT_ENROLL_CODE: {{ cba.enroll_code | string | json }}
        CALLBRIDGE_AGENT_AMI_SECRET: {{ cba.ami.secret | string | json }}
        NO_COLOR: "1"
    - runas: {{ cba.user }}
    - creates: {{ cba.config }}
    - require:
      - pip: callbridge-agent-package
      - file: callbridge-agent-dirs
{%- endif %}

# After enrollment the AMI settings stay those of pillar (a rotated secret reaches the agent's
# config and restarts it); the token in the same file is never touched.
{%- for key in ("host", "port", "username", "secret") %}
{%-   set line = key ~ " = " ~ (cba.ami[key] | json) %}
callbridge-agent-config-ami-{{ key }}:
  file.replace:
    - name: {{ cba.config }}
    - pattern: {{ ("^" ~ key ~ " = .*$") | yaml_encode }}
    - repl: {{ line | replace("\\", "\\\\") | yaml_encode }}
    - ignore_if_missing: true
    - backup: false
    - show_changes: false
    - require:
      - callbridge-agent-enroll
    - require_in:
      - file: callbridge-agent-config
{%- endfor %}

# The file stays the agent's and private, whoever touches it later.
callbridge-agent-config:
  file.managed:
    - name: {{ cba.config }}
    - replace: false
    - create: false
    - user: {{ cba.user }}
    - group: {{ cba.group }}
    - mode: "0600"
    - require:
      - callbridge-agent-enroll

{%- if cba.ami.manage %}

# The AMI user the agent logs in as (loopback only; `security` is what the guard reads).
callbridge-agent-ami-user:
  file.managed:
    - name: {{ cba.ami.manager_conf }}
    - source: salt://callbridge-agent/files/manager.conf.jinja
    - template: jinja
    - context:
        ami: {{ cba.ami | json }}
    - user: {{ cba.ami.file_user }}
    - group: {{ cba.ami.file_group }}
    - mode: "0640"
    - makedirs: true
    - show_changes: false

callbridge-agent-ami-reload:
  cmd.run:
    - name: {{ cba.ami.reload_cmd | yaml_encode }}
    - onchanges:
      - file: callbridge-agent-ami-user
{%- endif %}
