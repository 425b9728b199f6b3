{{/* The release's full name: the release name, or release-chart. */}}
{{- define "registry-local.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "registry-local.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "registry-local.labels" -}}
{{ include "registry-local.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "registry-local.serviceAccountName" -}}
{{- default (include "registry-local.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "registry-local.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Where the pod sees its files. */}}
{{- define "registry-local.peerDir" -}}/etc/registry-local-peer{{- end -}}
{{- define "registry-local.originsDir" -}}/etc/registry-local-origins{{- end -}}
{{- define "registry-local.accessDir" -}}/etc/registry-local-access{{- end -}}

{{/* The ConfigMap holding the access policy: the chart's own (access.policy),
the cluster admin's (access.existingConfigMap), or "" for none. */}}
{{- define "registry-local.policyConfigMap" -}}
{{- if .Values.access.policy -}}
{{- printf "%s-access" (include "registry-local.fullname" .) -}}
{{- else -}}
{{- .Values.access.existingConfigMap.name -}}
{{- end -}}
{{- end -}}

{{/* The policy's key in that ConfigMap. */}}
{{- define "registry-local.policyKey" -}}
{{- ternary "policy.yaml" .Values.access.existingConfigMap.key (not (empty .Values.access.policy)) -}}
{{- end -}}

{{/* An origin's credentials file in the pod (the Secret's key, projected). */}}
{{- define "registry-local.originFile" -}}
{{- $ := index . 0 -}}{{- $i := index . 1 -}}{{- $origin := index . 2 -}}
{{- printf "%s/%d/%s" (include "registry-local.originsDir" $) $i (ternary "config.json" "credentials" (eq (default "userpass" $origin.credentials.format) "dockerconfigjson")) -}}
{{- end -}}

{{/* The config file, from the values (docs/configuration.md has every key). */}}
{{- define "registry-local.config" -}}
{{- $v := .Values -}}
{{- $c := dict
  "listen" (printf "127.0.0.1:%d" (int $v.port))
  "metrics-listen" (printf "0.0.0.0:%d" (int $v.metricsPort))
  "cache-dir" "/var/lib/registry-local/cache"
  "s3-bucket" $v.s3.bucket
  "s3-region" $v.s3.region
  "tag-ttl" $v.tagTTL
  "log-format" "json"
  "bucket-registries" (join "," $v.bucketRegistries)
-}}
{{- with $v.s3.endpoint }}{{ $_ := set $c "s3-endpoint" . }}{{ end -}}
{{- with $v.s3.prefix }}{{ $_ := set $c "s3-prefix" . }}{{ end -}}
{{- with $v.cache.maxBytes }}{{ $_ := set $c "cache-max-bytes" . }}{{ end -}}
{{- if include "registry-local.policyConfigMap" . -}}
{{- $_ := set $c "access-policy" (printf "%s/policy.yaml" (include "registry-local.accessDir" .)) -}}
{{- end -}}
{{- if ne (toString $v.access.cacheTTL) "" }}{{ $_ := set $c "authorize-cache-ttl" (toString $v.access.cacheTTL) }}{{ end -}}
{{- if ne (toString $v.access.offlineGrace) "" }}{{ $_ := set $c "authorize-offline-grace" (toString $v.access.offlineGrace) }}{{ end -}}
{{- if $v.fleet.enabled }}
{{- $peer := include "registry-local.peerDir" . -}}
{{- $_ := set $c "peer-listen" (printf "0.0.0.0:%d" (int $v.fleet.port)) -}}
{{- $_ := set $c "peer-token-file" (printf "%s/token" $peer) -}}
{{- $_ := set $c "peer-tls-cert" (printf "%s/tls.crt" $peer) -}}
{{- $_ := set $c "peer-tls-key" (printf "%s/tls.key" $peer) -}}
{{- $_ := set $c "peer-ca" (printf "%s/ca.crt" $peer) -}}
{{- $_ := set $c "peer-tls-name" $v.fleet.tls.serverName -}}
{{- end -}}
{{- $upstreams := list -}}
{{- range $i, $origin := $v.upstreams -}}
{{- $entry := dict "match" $origin.match "url" $origin.url -}}
{{- if $origin.ecr -}}
{{- $_ := set $entry "credentials" "ecr" -}}
{{- else if $origin.credentials -}}
{{- $key := ternary "auth_file" "credentials_file" (eq (default "userpass" $origin.credentials.format) "dockerconfigjson") -}}
{{- $_ := set $entry $key (include "registry-local.originFile" (list $ $i $origin)) -}}
{{- end -}}
{{- if $origin.authorizeAtOrigin -}}
{{- $_ := set $entry "authorize_at_origin" true -}}
{{- end -}}
{{- $upstreams = append $upstreams $entry -}}
{{- end -}}
{{- with $upstreams }}{{ $_ := set $c "upstreams" . }}{{ end -}}
{{- toYaml (mergeOverwrite $c $v.extraConfig) -}}
{{- end -}}

{{/* The files written into containerd's certs.d: directory name -> hosts.toml. */}}
{{- define "registry-local.hostsFiles" -}}
{{- $v := .Values -}}
{{- $mirror := printf "[host.\"http://127.0.0.1:%d\"]\n  capabilities = [\"pull\", \"resolve\"]\n" (int $v.port) -}}
{{- $files := dict -}}
{{- if $v.containerd.default -}}
{{- $_ := set $files "_default" (printf "# Every registry through registry-local on this node; a registry it does not\n# serve answers 404 and containerd asks the registry itself (no server line:\n# the registry named in the image is the fallback).\n%s" $mirror) -}}
{{- end -}}
{{- range $v.containerd.registries -}}
{{- $server := ternary "https://registry-1.docker.io" (printf "https://%s" .) (eq . "docker.io") -}}
{{- $_ := set $files . (printf "# %s through registry-local on this node, else from %s itself.\nserver = %q\n%s" . . $server $mirror) -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}

{{/* The init container's program: each file of the ConfigMap (argv[1]) becomes
<argv[2]>/<name>/hosts.toml, written to a temporary file and renamed, so that
containerd never reads half a file. */}}
{{- define "registry-local.writeHosts" -}}
import os, sys
source, target = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(source)):
    if name.startswith('.'):
        continue
    directory = os.path.join(target, name)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(source, name), 'rb') as f:
        data = f.read()
    temporary = os.path.join(directory, '.hosts.toml.registry-local')
    with open(temporary, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, os.path.join(directory, 'hosts.toml'))
    print('wrote', os.path.join(directory, 'hosts.toml'))
{{- end -}}
