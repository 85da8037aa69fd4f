"""Kamailio's config and dispatcher list for a node's front. Pure text, no I/O.

Calls from outside: sanity checks (malformed requests answered or dropped), pike
(flood limits per source), the trusted networks (403 otherwise), then the dispatcher
spreads INVITEs over the SIP workers by their call load (algorithm 10, `maxload` =
a worker's calls; when that count says all are full, round robin: the count is a hint,
the workers' own limits decide), failing over to the next worker on 503, on pjsua2's own
486 of a full worker (the load count can lag, e.g. after the node restarted) or no answer; OPTIONS
pings take a dead worker out within seconds. Requests from the workers (outbound
calls) go where their Request-URI says. Every dialog is record-routed, so in-dialog
requests and the call load bookkeeping pass through the front too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from voxray.ua_node.config import FrontSettings

WORKERS_SET = 1


@dataclass(frozen=True)
class FrontDestination:
    uri: str  # sip:127.0.0.1:5081
    duid: str  # a worker process (key and pid): its call load starts at 0 after a restart
    max_calls: int


def dispatcher_list(destinations: list[FrontDestination]) -> str:
    lines = ["# setid destination flags priority attributes (written by the voxray UA node)"]
    # Priorities keep the file's order in Kamailio's list (at equal load the first is taken).
    n = len(destinations)
    lines += [f"{WORKERS_SET} {d.uri} 0 {n - i} duid={d.duid};maxload={d.max_calls}"
              for i, d in enumerate(destinations)]
    return "\n".join(lines) + "\n"


def _trusted_check(networks: list[str]) -> str:
    if not networks:
        return ""
    tests = " || ".join(f'is_in_subnet("$si", "{ipaddress.ip_network(n, strict=False)}")' for n in networks)
    return f"""    if (!ds_is_from_list("{WORKERS_SET}") && !({tests})) {{
        xlog("L_WARN", "voxray-front: $rm from untrusted $si refused\\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }}
"""


def kamailio_cfg(s: FrontSettings, *, bind: str, port: int, public_address: str | None, list_file: str,
                 ctl_socket: str, trusted: list[str], retry_after_s: int, worker_timeout_ms: int = 4000) -> str:
    advertise = f" advertise {public_address}:{port}" if public_address and public_address != bind else ""
    alias = public_address or bind
    return f"""#!KAMAILIO
# voxray's SIP front for one node (generated; edits are overwritten).
debug=1
log_stderror=yes
children={s.children}
auto_aliases=no
disable_tcp=yes
listen=udp:{bind}:{port}{advertise}
alias="{alias}:{port}"
dns=no
rev_dns=no
server_header="Server: voxray"
sip_warning=0

loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "pike.so"
loadmodule "ipops.so"
loadmodule "ctl.so"
loadmodule "dispatcher.so"
loadmodule "dialog.so"

modparam("ctl", "binrpc", "unix:{ctl_socket}")
modparam("tm", "fr_timer", {worker_timeout_ms})
modparam("tm", "fr_inv_timer", 120000)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("pv", "shvset", "draining=i:0")
modparam("pike", "sampling_time_unit", {s.flood_unit_s})
modparam("pike", "reqs_density_per_unit", {s.flood_requests})
modparam("pike", "remove_latency", {s.flood_unit_s * 2})
modparam("dialog", "default_timeout", 43200)
modparam("dialog", "dlg_match_mode", 1)  # the Route cookie, else Call-ID and tags
modparam("dispatcher", "list_file", "{list_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_hash_size", 8)
modparam("dispatcher", "ds_hash_initexpire", 30)
modparam("dispatcher", "ds_hash_expire", 7200)
modparam("dispatcher", "ds_ping_interval", {s.ping_interval_s})
modparam("dispatcher", "ds_ping_from", "sip:front@{alias}:{port}")
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", {s.ping_failures})
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_reply_codes", "class=2;class=4")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("17895", "7")) {{
        xlog("L_WARN", "voxray-front: malformed $rm from $si dropped\\n");
        exit;
    }}
    if (!ds_is_from_list("{WORKERS_SET}") && !pike_check_req()) {{
        exit;  # a flooding source: ignored for a while
    }}
{_trusted_check(trusted)}    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE") && $dlg_var(counted) == "1") {{
                ds_load_update();
            }}
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        # A peer that ignores the route set (sends in-dialog requests to the front's own
        # address, as sipp's built-in scenarios do): the dialog knows the worker.
        if (is_known_dlg() && $dlg_var(worker) != $null) {{
            # The dialog module sees in-dialog requests through loose_route's Route cookie;
            # without one it never saw this peer's ACK, timed the answered dialog out after
            # noack_timeout (70 s) and then answered the caller's BYE 481 itself: the worker
            # kept the call and the front its load. dlg_manage matches on Call-ID and tags.
            dlg_manage();
            $du = $dlg_var(worker);
            if (is_method("BYE") && $dlg_var(counted) == "1") {{
                ds_load_update();
            }}
            t_relay();
            exit;
        }}
        if (!is_method("ACK")) {{
            sl_send_reply("481", "Call/Transaction Does Not Exist");
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();  # the INVITE's 487 releases its load (failure route)
        }} else {{
            sl_send_reply("481", "Call/Transaction Does Not Exist");
        }}
        exit;
    }}
    if (t_check_trans()) {{
        exit;  # a retransmission: tm resent the last reply
    }}
    if (ds_is_from_list("{WORKERS_SET}")) {{
        # A worker's own request (an outbound call): to where its Request-URI says.
        record_route();
        if (!t_relay()) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (!uri == myself) {{
        sl_send_reply("403", "Relaying Forbidden");
        exit;
    }}
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if ($shv(draining) == 1) {{
        append_to_reply("Retry-After: {retry_after_s}\\r\\n");
        sl_send_reply("503", "Service Unavailable");
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        dlg_manage();
        if (ds_select_dst("{WORKERS_SET}", "10")) {{
            $dlg_var(counted) = "1";  # in Kamailio's count until its BYE (or failure)
        }} else if (ds_select_dst("{WORKERS_SET}", "4")) {{
            # The count says every worker is full, but it is a hint, not the truth: a list
            # reload zeroes it, a lost BYE keeps a call in it. The workers' own limits
            # decide (a full one answers pjsua2's 486, and the next one is tried).
            xlog("L_NOTICE", "voxray-front: all workers counted full; trying them anyway\n");
        }} else {{
            route(FULL);  # no worker in the set at all
        }}
        $dlg_var(worker) = $du;
        t_on_failure("NEXT_WORKER");
        t_on_reply("WORKER_REPLY");
    }} else if (!ds_select_dst("{WORKERS_SET}", "4")) {{
        route(FULL);
    }}
    if (!t_relay()) {{
        if (is_method("INVITE")) {{
            ds_load_unset();  # counted above, never sent: no failure route will let it go
        }}
        sl_reply_error();
    }}
    exit;
}}

route[FULL] {{
    append_to_reply("Retry-After: {retry_after_s}\\r\\n");
    sl_send_reply("503", "Service Unavailable");
    exit;
}}

onreply_route[WORKER_REPLY] {{
    if (status =~ "^2[0-9][0-9]$") {{
        ds_load_update();
    }}
}}

failure_route[NEXT_WORKER] {{
    if (t_is_canceled()) {{
        ds_load_unset();
        exit;
    }}
    # A draining worker (503), a full one (pjsua2's own 486 at its call limit: our code's
    # final answers carry X-Voxray-Final, and reach the caller), or one that never
    # answered: the next worker (the call's load moves along with it).
    if (t_check_status("503") || (t_check_status("486") && $T_rpl($hdr(X-Voxray-Final)) == $null)
            || (t_branch_timeout() && !t_branch_replied())) {{
        xlog("L_NOTICE", "voxray-front: $du answered $T_rpl($rs) or nothing: trying the next worker\\n");
        # ds_next_dst moves the call's count to the next worker, but past the last one it
        # drops the list ds_load_unset finds the count by: the call would hold a slot on
        # the last worker until the count's own expiry. So it is not asked past the last.
        if ($xavp(_dsdst_[1]=>uri) != $null && ds_next_dst()) {{
            $dlg_var(worker) = $du;
            t_on_failure("NEXT_WORKER");
            t_on_reply("WORKER_REPLY");
            t_relay();
            exit;
        }}
        ds_load_unset();
        append_to_reply("Retry-After: {retry_after_s}\\r\\n");
        t_reply("503", "Service Unavailable");
        exit;
    }}
    ds_load_unset();  # any other final answer is the caller's
}}
"""
