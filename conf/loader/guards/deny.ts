/** `deny:` addresses, CIDRs and ip files, listed users, and a store set of users changed at run time. */
import type { DenyGuardConfig } from '../../types.js'
import { readIpFile } from '../ip-files.js'
import { cidrList, policy, stringList } from '../values.js'
import { needUser } from './env.js'
import type { GuardReader } from './env.js'

export const readDeny: GuardReader<DenyGuardConfig> = (env, m, pos, _rc, common) => {
  const { ck } = env
  const ips = cidrList(ck, m.get('ips'), 'ips')
  const read = ck.list(m.get('ip_files'), 'ip_files', (it) => readIpFile(ck, it)) ?? []
  const ipFiles = read.map((f) => f.path)
  const fileIps = read.flatMap((f) => f.entries)
  const users = stringList(ck, m.get('users'), 'users')
  const usersSet = ck.str(m.get('users_set'), 'users_set', { pattern: /^\S+$/, patternHelp: 'must not contain spaces' }) ?? null
  if ((users.length > 0 || usersSet !== null)) needUser(env, pos, 'deny users / users_set')
  if (ips.length === 0 && ipFiles.length === 0 && users.length === 0 && usersSet === null && m.keys().every((k) => k === 'shadow' || k === 'reject')) {
    ck.warn(pos, 'deny: nothing to deny (set ips, ip_files, users or users_set)')
  }
  const onError = policy(ck, m.get('on_error')) ?? null
  return { kind: 'deny', ...common, ips, ipFiles, fileIps, users, usersSet, onError, policy: onError ?? env.storeOnError }
}
