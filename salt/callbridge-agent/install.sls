{%- from "callbridge-agent/map.jinja" import cba with context %}

{%- if cba.manage_user %}
callbridge-agent-user:
  group.present:
    - name: {{ cba.group }}
    - system: true
  user.present:
    - name: {{ cba.user }}
    - system: true
    - gid: {{ cba.group }}
    - optional_groups: {{ cba.groups | json }}
    - home: {{ cba.state_dir }}
    - createhome: false
    - shell: /usr/sbin/nologin
    - require:
      - group: callbridge-agent-user
{%- endif %}

callbridge-agent-venv:
  cmd.run:
    - name: {{ cba.python }} -m venv {{ cba.venv }}
    - creates: {{ cba.venv }}/bin/python

# The pinned version: installed when missing, replaced when pillar names another one.
callbridge-agent-package:
  pip.installed:
    - name: callbridge=={{ cba.version }}
    - bin_env: {{ cba.venv }}
{%- if cba.pip.index_url %}
    - index_url: {{ cba.pip.index_url }}
{%- endif %}
{%- if cba.pip.find_links %}
    - find_links: {{ cba.pip.find_links }}
{%- endif %}
{%- if cba.pip.no_index %}
    - no_index: true
{%- endif %}
    - require:
      - cmd: callbridge-agent-venv
