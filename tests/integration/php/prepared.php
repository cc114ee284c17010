<?php
// PHP PDO with server-side prepared statements (ATTR_EMULATE_PREPARES off: PDO sends named
// Parse messages) through a transaction-mode pool. Loops over 10 statements for $argv[2]
// seconds, re-preparing some each round as PHP applications do per request, and checks every
// result. Prints one JSON line: {"ops": n, "errors": n, "first_error": "..."}.
$dsn = $argv[1];
$deadline = microtime(true) + (float)$argv[2];
$id = (int)$argv[3];
$tally = ["ops" => 0, "errors" => 0, "first_error" => ""];
$pdo = new PDO($dsn, null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
                                   PDO::ATTR_EMULATE_PREPARES => false]);
$statements = [];
for ($i = 0; $i == 0 || microtime(true) < $deadline; $i++) {  // at least one
    $k = $i % 10;
    try {
        if (!isset($statements[$k]) || $i % 7 == 0) {
            $statements[$k] = $pdo->prepare("SELECT CAST(? AS int) + $k AS v");  // new Parse
        }
        $statements[$k]->execute([$id]);
        $v = (int)$statements[$k]->fetchColumn();
        $statements[$k]->closeCursor();
        if ($v !== $id + $k) throw new Exception("got $v, want " . ($id + $k));
        $tally["ops"]++;
    } catch (Exception $e) {
        $tally["errors"]++;
        if ($tally["first_error"] === "") $tally["first_error"] = $e->getMessage();
    }
}
echo json_encode($tally), "\n";
