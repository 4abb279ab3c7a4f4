/**
 * antibot: the guards that stop scalpers' scripts before any limit is spent, and the edge endpoints
 * they need. The gateway core wires these factories by guard kind and mounts the edge handlers.
 */
export { createIdentity, signSession, verifySession } from './identity.js'
export { denyGuard, DENY_CACHE_MS } from './deny.js'
export { captchaGuard, powKey, MAX_TOKEN, MAX_FORM_BODY } from './captcha.js'
export { signLinkQuery, verifyLinkQuery, linkMessage, linkKeys, newNonce } from '../../antibot/signed-link.js'
export { signedLinkGuard } from './signed-link.js'
export type { LinkClaims, LinkCheck } from '../../antibot/signed-link.js'
export { compileSecureLink, nginxLinkHash, nginxDecodeBase64url } from '../../antibot/nginx-secure-link.js'
export { campaignWindowGuard, windowState } from './campaign-window.js'
export { dedupeGuard, releasesMark } from './dedupe.js'
export { createEdgeHandlers } from '../edge/handlers.js'
export { waitingRoomGuard, roomJoinLog, Room, roomsOf } from './waiting-room.js'
export { createSiteverify, VERIFY_URLS, CaptchaError, parseAnswer } from '../../antibot/captcha/siteverify.js'
export type { CaptchaVerifier, VerifyResult, SiteverifyOptions, SiteverifyProvider } from '../../antibot/captcha/siteverify.js'
export { issueChallenge, verifySolution, solveChallenge, leadingZeroBits } from '../../antibot/captcha/pow.js'
export type { PowChallenge } from '../../antibot/captcha/pow.js'
export { signClearance, verifyClearance, clearanceSetCookie } from '../../antibot/captcha/clearance.js'
export { FORM_FIELDS } from './values.js'
