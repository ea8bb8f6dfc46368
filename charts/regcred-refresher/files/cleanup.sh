#!/bin/sh
# Pre-delete cleanup of one release (cleanup.onUninstall): stops the writers, then deletes the
# secrets this release wrote (both labels: managed-by=regcred-refresher and this instance),
# each only under a configured name, with this release's ServiceAccount references to them,
# and the leader-election Lease. Nothing else: a same-named secret of another release or made
# by hand lacks the labels and is never listed. POSIX sh + kubectl, no jq.
# Environment: RELEASE_NAMESPACE INSTANCE SECRETS SERVICE_ACCOUNTS NAMESPACED
#              TARGET_NAMESPACES DEPLOYMENT CRONJOB LEASE
#              POD_SELECTOR (the release's refresher pods) WAIT_SECONDS
set -eu
selector="app.kubernetes.io/managed-by=regcred-refresher,regcred-refresher.io/instance=$INSTANCE"
ns_=$RELEASE_NAMESPACE

# 1. No writer may restore what is deleted below: suspend the CronJob, scale the daemon to 0,
#    wait for running refresher pods to end. A pod whose containers all wait for their image
#    (ErrImagePull, ImagePullBackOff, a bad name) has written nothing and is no writer: waiting
#    for it would block every uninstall of a release whose image never pulled.
if [ -n "$CRONJOB" ]; then
  kubectl -n "$ns_" patch cronjob "$CRONJOB" --type=merge -p '{"spec":{"suspend":true}}' || true
fi
if [ -n "$DEPLOYMENT" ]; then
  kubectl -n "$ns_" patch deployment "$DEPLOYMENT" --type=merge -p '{"spec":{"replicas":0}}' || true
fi
waited=0
while :; do
  # A failed read stops the script (set -e), as before: never delete on an unknown state.
  pods=$(kubectl -n "$ns_" get pods -l "$POD_SELECTOR" \
    --field-selector=status.phase!=Succeeded,status.phase!=Failed \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.containerStatuses[*].state.waiting.reason}{"\n"}{end}')
  running=$(printf '%s\n' "$pods" |
    while read -r pod reasons; do
      [ -n "$pod" ] || continue
      stuck=
      if [ -n "$reasons" ]; then
        stuck=yes
        for r in $reasons; do
          case "$r" in ErrImagePull | ImagePullBackOff | InvalidImageName | ErrImageNeverPull) ;; *) stuck= ;; esac
        done
      fi
      [ -n "$stuck" ] || echo "$pod"
    done)
  [ -z "$running" ] && break
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    echo "cleanup: refresher pods still running after ${WAIT_SECONDS}s; nothing deleted" >&2
    exit 1
  fi
  sleep 2
  waited=$((waited + 2))
done

# remove_ref NAMESPACE SA SECRET: drop {name: SECRET} from the ServiceAccount's imagePullSecrets
# with a JSON patch whose `test` op makes it a no-op if the list changed meanwhile.
remove_ref() {
  refs=$(kubectl -n "$1" get serviceaccount "$2" --ignore-not-found \
    -o jsonpath='{range .imagePullSecrets[*]}{.name}{"\n"}{end}') || return 0
  i=0
  printf '%s\n' "$refs" | while IFS= read -r ref; do
    if [ "$ref" = "$3" ]; then
      kubectl -n "$1" patch serviceaccount "$2" --type=json -p \
        "[{\"op\":\"test\",\"path\":\"/imagePullSecrets/$i/name\",\"value\":\"$3\"},{\"op\":\"remove\",\"path\":\"/imagePullSecrets/$i\"}]" >/dev/null &&
        echo "cleanup: removed $3 from serviceaccount $1/$2"
      break
    fi
    i=$((i + 1))
  done
}

# 2. The secrets, listed by name (the only list RBAC allows) and by both labels, cluster-wide or
#    (namespaced mode) in each target namespace.
deleted=0
for name in $SECRETS; do
  # Assigned first, so a refused list stops the script (set -e) instead of deleting nothing.
  if [ "$NAMESPACED" != true ]; then
    namespaces=$(kubectl get secrets --all-namespaces --field-selector "metadata.name=$name" \
      -l "$selector" -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}')
  else
    # Namespaced mode: the hook may look only where the refresher may write.
    namespaces=
    for t in $TARGET_NAMESPACES; do
      found=$(kubectl -n "$t" get secrets --field-selector "metadata.name=$name" \
        -l "$selector" -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}')
      namespaces="$namespaces $found"
    done
  fi
  for ns in $namespaces; do
    for sa in $SERVICE_ACCOUNTS; do remove_ref "$ns" "$sa" "$name"; done
    kubectl -n "$ns" delete secret "$name" --ignore-not-found --wait=false
    deleted=$((deleted + 1))
  done
done

# 3. The Lease of leader election (not a Helm object).
if [ -n "$LEASE" ]; then
  kubectl -n "$ns_" delete lease "$LEASE" --ignore-not-found
fi
echo "cleanup: deleted $deleted secret(s) of instance $INSTANCE"
