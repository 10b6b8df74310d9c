"""`gridtwin controller serve --config X.yaml`: the controller service with its HTTP API;
`gridtwin controller pki DIR`: a lab CA with server/client certificates for IEC 104 over TLS."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("controller", help="the VPP controller service")
    cs = p.add_subparsers(dest="controller_command", required=True)
    s = cs.add_parser("serve", help="run the control cycle and serve the API on 127.0.0.1")
    s.add_argument("--config", required=True, help="service YAML (devices, cycle, historian, api)")
    s.add_argument("--port", type=int, help="API port (overrides api.port)")
    s.add_argument("-v", "--verbose", action="store_true", help="log each cycle")
    s.set_defaults(func=_serve)
    k = cs.add_parser("pki", help="write a lab CA and CA-signed server/client certificates (keys mode 0600) "
                                  "for IEC 104 over TLS on loopback; use your own PKI in the field")
    k.add_argument("dir", help="folder to write ca.pem, server.pem/.key, client.pem/.key into")
    k.set_defaults(func=_pki)


def _pki(args) -> int:
    from pathlib import Path

    from controller.security.tls import make_test_pki
    from gridtwin_cli import UserError

    d = Path(args.dir)
    if d.exists() and any(d.iterdir()):
        raise UserError(f"{d}: folder is not empty; give a new or empty folder")
    for name, path in make_test_pki(d).items():
        print(f"{name}: {path}")
    return 0


def _serve(args) -> int:
    import logging

    from controller.config import ConfigError, load_config
    from controller.service import serve
    from gridtwin_cli import UserError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config)
        if cfg.openadr is not None:
            import openleadr.client  # noqa: F401 - it sets its logger to INFO on import; ours wins
        for noisy in ("apscheduler", "openleadr"):  # a line per poll/report; -v shows them
            logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
        if args.port:
            cfg.api.port = args.port
        return serve(cfg)
    except ConfigError as e:
        raise UserError(str(e)) from None
