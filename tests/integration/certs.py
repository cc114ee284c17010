"""Certificates for the TLS tests, made with the openssl command line: two CAs (the second is
the "wrong" one), a server certificate for localhost and 127.0.0.1 from each, and client
certificates whose CN is a user name."""
import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Certs:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        for ca in ("ca", "other_ca"):
            self._ca(ca)
        # The server's certificate names localhost and 127.0.0.1 (verify-full by either).
        self.server = self._leaf("server", "ca", "localhost",
                                 "subjectAltName=DNS:localhost,IP:127.0.0.1")
        # The same names, signed by the other CA: refused by verify-ca against "ca".
        self.server_other = self._leaf("server_other", "other_ca", "localhost",
                                       "subjectAltName=DNS:localhost,IP:127.0.0.1")
        # Names nothing a client connects to: refused by verify-full only.
        self.server_elsewhere = self._leaf("server_elsewhere", "ca", "db.example.com",
                                           "subjectAltName=DNS:db.example.com")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _ca(self, name):
        _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec",
                 "-pkeyopt", "ec_paramgen_curve:prime256v1", "-days", "30",
                 "-subj", f"/CN=pgwarden test {name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.crt", cwd=self.dir)

    def _leaf(self, name, ca, cn, extension=None):
        _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=self.dir)
        args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-days", "30", "-out", f"{name}.crt"]
        if extension:
            with open(os.path.join(self.dir, f"{name}.ext"), "w") as f:
                f.write(extension + "\n")
            args += ["-extfile", f"{name}.ext"]
        _openssl(*args, cwd=self.dir)
        os.chmod(os.path.join(self.dir, f"{name}.key"), 0o600)
        return (self.path(f"{name}.crt"), self.path(f"{name}.key"))

    def client(self, user, ca="ca"):
        """A client certificate whose CN is `user`, signed by `ca`: (cert, key)."""
        return self._leaf(f"client_{user}_{ca}", ca, user)
